"""A run's identity: every parameter that changes what it measures, and a hash of them.

run.json's ``params`` block holds these parameters under the same names for a simulated run
(`sincere.simulation.simulator`) and a measured one (`sincere.serving.server`, with the generator's
schedule parameters); `run_identity` picks them out of it, normalised so that the same run described
twice gives the same identity (a mix given as weights or as shares, a path or the file it names).
The grid scripts compare ``params_hash`` before reusing a finished run, and results processing
groups runs by their identity less what may differ between the runs it compares.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sincere.files import DIGEST_CHARS, file_digest
from sincere.profiles.profile_set import profiles_digest
from sincere.traffic.patterns import pattern_options

# Parameters that differ between repeats of one grid cell (the arrivals' seed).
REPEAT_KEYS = ("seed", "repeat")
# What the engine side of a run is: left out when a simulated run is paired with a measured one
# (they must agree on everything else, the profile the simulator replays included). The device
# and dtype of a measured run are not parameters: the machine decides them, and its profile,
# which is part of the identity, says which machine it was.
ENGINE_KEYS = ("engine", "jitter", "length_term", "replays", "decode", "host_cache",
               "engine_process", "pin_cores")
# The profile a run planned with: differs between the CC and the non-CC side of a CC pair.
PROFILE_KEYS = ("profiles",)
HASH_CHARS = DIGEST_CHARS


def _number(value: Any) -> float | None:
    """A number as a float rounded to 9 significant digits; None for a missing or infinite one
    (an unbounded duration: the whole trace)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return float(f"{number:.9g}") if math.isfinite(number) else None


def _mix(mix: Any) -> dict[str, float]:
    """A model mix as shares that sum to 1, sorted by model."""
    if not isinstance(mix, Mapping) or not mix:
        return {}
    total = sum(float(v) for v in mix.values())
    return {str(k): _number(float(v) / total) for k, v in sorted(mix.items())} if total else {}


def _pattern_options(pattern: str, options: Any) -> dict[str, Any]:
    """The pattern's own options (defaults filled in), not what it derived (a solved rate, the
    request count); a trace file by its contents."""
    given = options if isinstance(options, Mapping) else {}
    try:
        defaults = pattern_options(pattern)
    except ValueError:
        defaults = {}
    chosen = {name: given.get(name, default) for name, default in defaults.items()}
    for name, value in chosen.items():
        if name == "trace_path" and value:
            chosen[name] = file_digest(str(Path(str(value)).resolve()))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            chosen[name] = _number(value)
    return dict(sorted(chosen.items()))


def _strategy_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        return {}
    return {k: (_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in sorted(params.items())}


def run_identity(params: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of the run whose run.json ``params`` block is ``params``.

    Missing parameters (an older run.json) are None, so such runs still compare and group.
    """
    profiles = params.get("profiles") if isinstance(params.get("profiles"), Mapping) else {}
    engine = str(params.get("engine") or "")
    identity: dict[str, Any] = {
        "engine": engine,
        "strategy": params.get("strategy"),
        "strategy_params": _strategy_params(params.get("strategy_params")),
        "pattern": params.get("pattern"),
        "pattern_options": _pattern_options(str(params.get("pattern") or ""),
                                            params.get("pattern_params")),
        "mean_rps": _number(params.get("mean_rps")),
        "sla_s": _number(params.get("sla_s")),
        "duration_s": _number(params.get("duration_s")),
        "seed": params.get("seed"),
        "repeat": params.get("repeat"),
        "models": sorted(str(m) for m in params.get("models") or []),
        "model_mix": _mix(params.get("model_mix")),
        "max_new_tokens": params.get("max_new_tokens"),
        "profiles": profiles.get("digest") or (
            profiles_digest(profiles["loading_file"], profiles["batch_file"])
            if profiles.get("loading_file") and profiles.get("batch_file") else None),
        "std_factor": _number(profiles.get("std_factor")),
        "drain_timeout_s": _number(params.get("drain_timeout_s")),
        "max_queue": params.get("max_queue"),
    }
    if engine == "sim":
        identity["jitter"] = params.get("jitter")
        # Batches timed by their longest prompt (sincere.profiles.length_term); absent before it
        # existed.
        identity["length_term"] = bool(params.get("length_term"))
        # Jitter replays of the same arrivals (sincere.simulation.simulator); one before they
        # existed.
        identity["replays"] = int(params.get("replays") or 1)
    else:
        identity.update({key: params.get(key) for key in ("decode", "host_cache",
                                                          "engine_process", "pin_cores")})
    if params.get("tls"):
        # Over HTTPS each request's latency holds a handshake. Named only when true, so that
        # the runs made before TLS existed keep their identity.
        identity["tls"] = True
    return identity


def params_hash(identity: Mapping[str, Any], leave_out: Iterable[str] = ()) -> str:
    """A short hash of an identity (less the keys in ``leave_out``)."""
    skip = set(leave_out)
    kept = {k: v for k, v in identity.items() if k not in skip}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """``name: found -> expected`` for each parameter that differs (values shortened)."""
    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{key}: {short(found.get(key))} -> {short(expected.get(key))}"
            for key in sorted(set(expected) | set(found))
            if expected.get(key) != found.get(key)]


def with_identity(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` (a run.json document) with its ``identity`` and ``params_hash`` set from its
    ``params``."""
    identity = run_identity(run.get("params") or {})
    run["identity"] = identity
    run["params_hash"] = params_hash(identity)
    return run
