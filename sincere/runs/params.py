"""run.json's ``params`` block (SPEC section 2): the one place that names its keys.

A run's parameters come in two halves. The traffic half is the generator's: api_calls.py sends
it to the server (``POST /start`` and ``/stop``), the simulator and the runner know it from the
grid point. The serving half is the strategy, the SLA, the models, the engine and what the
engine side alone knows (``SIDE_KEYS``). The server, the simulator, the runner (which predicts
what the server will write, to compare identities before reusing a run) and client-side runs
all build the block with ``run_params``; ``sincere.runs.identity`` picks out of it what makes a
run's identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The traffic half, in the order run.json lists it.
TRAFFIC_KEYS = ("pattern", "pattern_params", "mean_rps", "duration_s", "seed", "repeat",
                "model_mix")
# What one side of a run alone knows, each with what it says.
SIDE_KEYS = {
    "decode": "the engine's decoding: eager generate or the static compiled engine",
    "host_cache": "swaps copy weights kept in host RAM (else load from disk)",
    "engine_process": "the engine runs in a process of its own",
    "pin_cores": "the engine's process has cores of its own",
    "device": "the torch device the engine ran on",
    "dtype": "the weights' dtype",
    "profile_mismatch": "where the profile contradicts the server (CC mode, load path)",
    "allow_profile_mismatch": "the server ran despite a profile mismatch",
    "max_prompt_chars": "the longest prompt the server accepts",
    "removed_models": "models removed during the run (DELETE /models)",
    "tls": "the server answered over HTTPS: each request's handshake is in the client's latency",
    "api_key_required": "the server asked every call for an API key (the key is never written)",
    "jitter": "simulation: batch and swap times drawn around the profile's means",
    "length_term": "simulation: batches timed by their longest prompt",
    "replays": "simulation: replays of the same arrivals with other jitter seeds",
}


def traffic_params(*, pattern: str, pattern_params: Mapping[str, Any] | None,
                   mean_rps: float | None, duration_s: float | None, seed: int | None,
                   repeat: int | None, model_mix: Mapping[str, float] | None,
                   workloads: int | None = None) -> dict[str, Any]:
    """The traffic half of ``params``: the arrival pattern and its options, the mean rate, the
    duration, the arrivals' seed and repeat, the model mix (and the prompts drawn from)."""
    block = {"pattern": pattern, "pattern_params": dict(pattern_params or {}),
             "mean_rps": mean_rps, "duration_s": duration_s, "seed": seed, "repeat": repeat,
             "model_mix": dict(model_mix) if model_mix is not None else None}
    if workloads is not None:
        block["workloads"] = workloads
    return block


def run_params(traffic: Mapping[str, Any], *, strategy: str,
               strategy_params: Mapping[str, Any], sla_s: float, max_new_tokens: int | None,
               models: Sequence[str], engine: str, profiles: Mapping[str, Any] | None = None,
               drain_timeout_s: float | None = None, max_queue: int | None = None,
               **side: Any) -> dict[str, Any]:
    """run.json's ``params``: the traffic half (as the generator gave it: every key kept) and
    the serving half; ``side`` holds SIDE_KEYS only (another name is a TypeError, so that a
    key cannot be misspelt on one side of a comparison)."""
    unknown = sorted(set(side) - set(SIDE_KEYS))
    if unknown:
        raise TypeError(f"not a run parameter: {', '.join(unknown)} (known: "
                        f"{', '.join(SIDE_KEYS)})")
    ordered = {key: traffic[key] for key in TRAFFIC_KEYS if key in traffic}
    ordered.update({k: v for k, v in traffic.items() if k not in ordered})
    return {"strategy": strategy, "strategy_params": dict(strategy_params), **ordered,
            "sla_s": sla_s, "models": list(models), "max_new_tokens": max_new_tokens,
            "engine": engine, "profiles": dict(profiles) if profiles is not None else None,
            "drain_timeout_s": drain_timeout_s, "max_queue": max_queue, **side}
