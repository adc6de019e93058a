"""Arrival schedules for the traffic generator and the simulator (SPEC section 5).

A run's whole schedule (`sincere.traffic.schedule.Schedule`: when each request leaves, for which
model, with which prompt) is built once from a seed, so the generator and the simulator replay the
very same arrivals. Every synthetic pattern has the requested long-run mean rate by construction;
randomness comes only from the `numpy.random.Generator` passed in, never from global state, and gaps
are never clipped. Trace files are read by `sincere.traffic.traces`.

Add a pattern by writing `name_arrivals(mean_rps, duration_s, rng, *, option=default) -> Arrivals`
and one entry in `PATTERNS`; its keyword-only parameters are its options.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sincere.traffic.traces import read_trace

MAX_EXPECTED_REQUESTS = 50_000_000  # refuse schedules that would not fit in memory (a typo)


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Arrivals:
    """What a pattern returns: arrival times, prompt lengths where the source knows them, and
    derived quantities worth recording in run.json (e.g. the solved off rate)."""

    times_s: np.ndarray
    prompt_tokens: list[int | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _check_rate_duration(mean_rps: float | None, duration_s: float) -> tuple[float, float]:
    """Synthetic patterns need a positive finite rate and window, and a schedule that fits."""
    if mean_rps is None or not (math.isfinite(mean_rps) and mean_rps > 0):
        raise ValueError(f"mean_rps must be a positive finite number, got {mean_rps!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number, got {duration_s!r}")
    if mean_rps * duration_s > MAX_EXPECTED_REQUESTS:
        raise ValueError(f"mean_rps={mean_rps} over duration_s={duration_s} would be "
                         f"{mean_rps * duration_s:.3g} requests (limit {MAX_EXPECTED_REQUESTS})")
    return float(mean_rps), float(duration_s)


def _renewal_times(draw_gaps: Callable[[int], np.ndarray], first_gap_s: float,
                   mean_gap_s: float, duration_s: float) -> np.ndarray:
    """Arrival times in [0, duration_s) of a renewal process: cumulative sums of gaps drawn in
    vectorised chunks until the window is covered."""
    expected = duration_s / mean_gap_s
    chunk = int(expected + 8.0 * math.sqrt(expected + 1.0) + 16)
    pieces = [np.array([first_gap_s])]
    end_s = first_gap_s
    while end_s < duration_s:
        piece = end_s + np.cumsum(draw_gaps(chunk))
        pieces.append(piece)
        end_s = float(piece[-1])
        chunk = max(16, chunk // 4)
    times_s = np.concatenate(pieces)
    return times_s[times_s < duration_s]


def gamma_arrivals(mean_rps: float, duration_s: float, rng: np.random.Generator, *,
                   gamma_shape: float = 1.0) -> Arrivals:
    """Gamma renewal process: gaps ~ Gamma(k, 1/(k·λ)), mean 1/λ, CV 1/√k (k = 1: Poisson).

    It starts in its stationary state (first gap = U · Gamma(k+1, θ), the forward-recurrence
    time), so the expected count in any window of length T is exactly λ·T.
    """
    mean_rps, duration_s = _check_rate_duration(mean_rps, duration_s)
    if not (math.isfinite(gamma_shape) and gamma_shape > 0):
        raise ValueError(f"gamma_shape must be a positive finite number, got {gamma_shape!r}")
    scale_s = 1.0 / (gamma_shape * mean_rps)
    first_gap_s = float(rng.random() * rng.gamma(gamma_shape + 1.0, scale_s))
    times_s = _renewal_times(lambda n: rng.gamma(gamma_shape, scale_s, size=n), first_gap_s,
                             1.0 / mean_rps, duration_s)
    return Arrivals(times_s)


def poisson_arrivals(mean_rps: float, duration_s: float, rng: np.random.Generator) -> Arrivals:
    """Homogeneous Poisson process at λ: exponential gaps of mean 1/λ."""
    mean_rps, duration_s = _check_rate_duration(mean_rps, duration_s)
    mean_gap_s = 1.0 / mean_rps
    times_s = _renewal_times(lambda n: rng.exponential(mean_gap_s, size=n),
                             float(rng.exponential(mean_gap_s)), mean_gap_s, duration_s)
    return Arrivals(times_s)


def constant_arrivals(mean_rps: float, duration_s: float, rng: np.random.Generator) -> Arrivals:
    """Deterministic: one request every 1/λ s, the first at t = 0 (uses no randomness)."""
    mean_rps, duration_s = _check_rate_duration(mean_rps, duration_s)
    times_s = np.arange(math.ceil(mean_rps * duration_s) + 1, dtype=np.float64) / mean_rps
    return Arrivals(times_s[times_s < duration_s])


def bursty_off_rate(mean_rps: float, burst_on_s: float, burst_off_s: float,
                    burst_peak_to_mean: float) -> float:
    """The off-period rate that makes the on/off process's long-run mean exactly λ:
    λ_off = (λ(on + off) − λ_on·on) / off with λ_on = peak_to_mean·λ and mean durations."""
    on_rps = burst_peak_to_mean * mean_rps
    off_rps = (mean_rps * (burst_on_s + burst_off_s) - on_rps * burst_on_s) / burst_off_s
    if off_rps < -1e-12 * mean_rps:
        largest = (burst_on_s + burst_off_s) / burst_on_s
        raise ValueError(
            f"bursty: burst_peak_to_mean={burst_peak_to_mean} conflicts with burst_on_s="
            f"{burst_on_s} and burst_off_s={burst_off_s}: the on periods alone would exceed the "
            f"mean rate (the off rate would be {off_rps:.4g} req/s < 0). Use burst_peak_to_mean "
            f"<= (burst_on_s + burst_off_s) / burst_on_s = {largest:.6g}, shorter on periods, "
            f"or longer off periods.")
    return max(off_rps, 0.0)


def bursty_arrivals(mean_rps: float, duration_s: float, rng: np.random.Generator, *,
                    burst_on_s: float = 2.0, burst_off_s: float = 12.0,
                    burst_peak_to_mean: float = 5.0) -> Arrivals:
    """On/off Markov-modulated Poisson process whose long-run mean rate is λ.

    On and off durations are exponential (means `burst_on_s`, `burst_off_s`); the rate is
    peak_to_mean·λ while on, and while off the rate that makes this run's expected count exactly
    λ·duration given the on/off periods it drew (on average `bursty_off_rate`). Without that
    second solve a one-hour run's mean would swing by about ±5% (one s.d.) with the defaults; with
    it only the Poisson noise is left (about ±0.8% at 4 req/s over an hour). The first state is
    drawn with its stationary probability on/(on+off).
    """
    mean_rps, duration_s = _check_rate_duration(mean_rps, duration_s)
    for name, value in (("burst_on_s", burst_on_s), ("burst_off_s", burst_off_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (math.isfinite(burst_peak_to_mean) and burst_peak_to_mean >= 1):
        raise ValueError(f"burst_peak_to_mean must be >= 1, got {burst_peak_to_mean!r}")
    on_rps = burst_peak_to_mean * mean_rps
    long_run_off_rps = bursty_off_rate(mean_rps, burst_on_s, burst_off_s, burst_peak_to_mean)
    off_rps = long_run_off_rps

    # Alternating sojourns; exponential, so the stationary residual of the first is the same law.
    starts_on = bool(rng.random() < burst_on_s / (burst_on_s + burst_off_s))
    cycle_s = burst_on_s + burst_off_s
    chunk = 2 * int(duration_s / cycle_s + 4 * math.sqrt(duration_s / cycle_s + 1) + 8)
    lengths: list[np.ndarray] = []
    total_s = 0.0
    while total_s < duration_s:
        mean_s = np.where((np.arange(chunk) % 2 == 0) == starts_on, burst_on_s, burst_off_s)
        piece = rng.exponential(1.0, size=chunk) * mean_s
        lengths.append(piece)
        total_s += float(piece.sum())  # chunk is even, so the on/off alternation carries on
    length_s = np.concatenate(lengths)
    end_s = np.cumsum(length_s)
    start_s = end_s - length_s
    keep = start_s < duration_s
    start_s, end_s = start_s[keep], np.minimum(end_s[keep], duration_s)
    is_on = (np.arange(start_s.size) % 2 == 0) == starts_on
    window_s = end_s - start_s

    # Solve the off rate again on this run's own on/off path, so that the run's expected
    # count is exactly λ·duration: the burst pattern's slow swings no longer move the run's mean.
    on_total_s = float(window_s[is_on].sum())
    off_total_s = float(window_s[~is_on].sum())
    if off_total_s > 0:
        off_rps = max(0.0, (mean_rps * duration_s - on_rps * on_total_s) / off_total_s)
    if on_total_s > 0 and on_rps * on_total_s > mean_rps * duration_s:
        on_rps = mean_rps * duration_s / on_total_s  # bursts took more than the whole budget
    counts = rng.poisson(np.where(is_on, on_rps, off_rps) * window_s)
    times_s = (np.repeat(start_s, counts)
               + rng.random(int(counts.sum())) * np.repeat(window_s, counts))
    times_s.sort()
    return Arrivals(times_s[times_s < duration_s],
                    info={"burst_on_rps": on_rps, "burst_off_rps": off_rps,
                          "burst_off_rps_long_run": long_run_off_rps})


def ramp_rate_integral(duration_s: float, ramp_period_s: float, ramp_alpha: float) -> float:
    """∫₀ᵀ of the unit-mean triangle 1 + α·tri(t/period) (tri = −1 at phase 0, +1 at 1/2): the
    expected count of a ramp at λ = 1 over [0, T]; T for whole periods, more or less otherwise."""
    whole, part_s = divmod(duration_s, ramp_period_s)
    half_s = ramp_period_s / 2.0
    # tri rises from -1 to 1 over the first half period and falls back over the second.
    rising_s = min(part_s, half_s)
    falling_s = max(0.0, part_s - half_s)
    tri_integral_s = (rising_s * (-1.0 + rising_s / half_s)
                      + falling_s * (1.0 - falling_s / half_s))
    return whole * ramp_period_s + part_s + ramp_alpha * tri_integral_s


def ramp_arrivals(mean_rps: float, duration_s: float, rng: np.random.Generator, *,
                  ramp_period_s: float = 40.0, ramp_alpha: float = 0.75) -> Arrivals:
    """Periodic triangle rate: λ(1−α) at t = 0, up to λ(1+α) at half period, back down.

    Over a run that is not a whole number of periods the triangle would not average λ (30 s of a
    40 s period average +12.7%), so the shape is scaled by λ·T / ∫₀ᵀ rate: the run's expected
    count is exactly λ·T for any duration (as for the bursty pattern). Arrivals by thinning
    (Lewis–Shedler): a Poisson process at the scaled peak rate, each candidate kept with
    probability rate(t) / peak.
    """
    mean_rps, duration_s = _check_rate_duration(mean_rps, duration_s)
    if not (math.isfinite(ramp_period_s) and ramp_period_s > 0):
        raise ValueError(f"ramp_period_s must be a positive finite number, got {ramp_period_s!r}")
    if not (0.0 <= ramp_alpha <= 1.0):
        raise ValueError(f"ramp_alpha must be in [0, 1], got {ramp_alpha!r}")
    scale = duration_s / ramp_rate_integral(duration_s, ramp_period_s, ramp_alpha)
    max_rps = mean_rps * (1.0 + ramp_alpha) * scale
    mean_gap_s = 1.0 / max_rps
    candidates_s = _renewal_times(lambda n: rng.exponential(mean_gap_s, size=n),
                                  float(rng.exponential(mean_gap_s)), mean_gap_s, duration_s)
    phase = np.mod(candidates_s / ramp_period_s, 1.0)
    triangle = 1.0 - 4.0 * np.abs(phase - 0.5)  # -1 at phase 0, +1 at phase 1/2
    keep_probability = (1.0 + ramp_alpha * triangle) / (1.0 + ramp_alpha)
    keep = rng.random(candidates_s.size) < keep_probability
    return Arrivals(candidates_s[keep],
                    info={"ramp_min_rps": mean_rps * (1.0 - ramp_alpha) * scale,
                          "ramp_max_rps": max_rps, "ramp_scale": scale})


def trace_arrivals(mean_rps: float | None, duration_s: float, rng: np.random.Generator, *,
                   trace_path: str | Path | None = None,
                   trace_rate: float | None = None) -> Arrivals:
    """Replay a trace's timestamps (relative to its first request), keeping those < duration_s.

    Target rate: `trace_rate` if given, else `mean_rps` if > 0; 0 or None keeps the trace's own
    timing. Rescaling multiplies every gap by one factor chosen so that the replayed window holds
    target·duration_s requests (window [0, duration_s)); when the trace has fewer, the whole trace
    is replayed with mean gap 1/target and ends before duration_s. `duration_s` may be math.inf
    (the whole trace). Uses no randomness.
    """
    if trace_path is None or str(trace_path) == "":
        raise ValueError("pattern 'trace' needs the option trace_path (an Azure CSV or "
                         "Mooncake JSONL file)")
    if not (duration_s > 0):
        raise ValueError(f"duration_s must be > 0 (math.inf for the whole trace), "
                         f"got {duration_s!r}")
    target_rps = _trace_target(mean_rps, trace_rate)
    times_s, prompt_tokens = read_trace(Path(trace_path))
    info: dict[str, Any] = {"trace_requests": int(times_s.size),
                            "trace_span_s": float(times_s[-1])}
    if target_rps is None:
        time_scale = 1.0
        kept = int(np.searchsorted(times_s, duration_s, side="left"))
    else:
        time_scale, kept = _trace_scale(times_s, target_rps, duration_s, trace_path)
        times_s = times_s * time_scale
    info["trace_time_scale"] = time_scale
    times_s = times_s[:kept]
    kept = int(np.count_nonzero(times_s < duration_s))  # guards rounding at the boundary
    return Arrivals(times_s[:kept], prompt_tokens[:kept], info)


def _trace_target(mean_rps: float | None, trace_rate: float | None) -> float | None:
    """Resolve the rescale target of a trace replay (None: keep the trace's timing)."""
    targets = [rate for rate in (trace_rate, mean_rps) if rate is not None and rate != 0]
    for rate in targets:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"trace rescale target must be a positive rate or 0, got {rate!r}")
    if len(targets) == 2 and targets[0] != targets[1]:
        raise ValueError(f"trace_rate={trace_rate} and mean_rps={mean_rps} disagree: give one "
                         f"(mean_rps=0 keeps the trace's own timing)")
    return float(targets[0]) if targets else None


def _trace_scale(times_s: np.ndarray, target_rps: float, duration_s: float,
                 trace_path: str | Path) -> tuple[float, int]:
    """Gap factor and number of requests replayed so that count / window = target.

    The window ends at the first request not replayed (at duration_s after scaling), or at the
    last request when the trace runs out; requests sharing a timestamp stay together.
    """
    n = times_s.size
    wanted = round(target_rps * duration_s) if math.isfinite(duration_s) else n
    if wanted < n:
        boundary = int(np.searchsorted(times_s, times_s[wanted], side="left"))
        if boundary == 0:  # the first requests all share t = 0; end the window after them
            boundary = int(np.searchsorted(times_s, times_s[wanted], side="right"))
        if boundary < n:
            return duration_s / float(times_s[boundary]), boundary
    if n < 2 or times_s[-1] <= 0:
        raise ValueError(f"{trace_path}: cannot rescale a trace whose requests all share one "
                         f"timestamp")
    return (n - 1) / (target_rps * float(times_s[-1])), n


PATTERNS: dict[str, Callable[..., Arrivals]] = {
    "gamma": gamma_arrivals,
    "poisson": poisson_arrivals,
    "constant": constant_arrivals,
    "bursty": bursty_arrivals,
    "ramp": ramp_arrivals,
    "trace": trace_arrivals,
}


def pattern_options(pattern: str) -> dict[str, Any]:
    """The options a pattern takes, with their defaults."""
    function = _lookup(pattern)
    return {name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY}


def options_from_constants(constants: Any, pattern: str) -> dict[str, Any]:
    """A pattern's options from a script's constants of the same names in upper case
    (``GAMMA_SHAPE`` -> ``gamma_shape``); options the script has no constant for keep their
    defaults."""
    return {name: getattr(constants, name.upper()) for name in pattern_options(pattern)
            if hasattr(constants, name.upper())}


def _lookup(pattern: str) -> Callable[..., Arrivals]:
    try:
        return PATTERNS[pattern.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown traffic pattern {pattern!r}; known: "
                         f"{', '.join(sorted(PATTERNS))}") from None


def generate_arrivals(pattern: str, mean_rps: float | None, duration_s: float,
                      rng: np.random.Generator,
                      options: Mapping[str, Any]) -> tuple[Arrivals, dict]:
    """Run a pattern with its own options and return the arrivals and the options it used.

    Options that belong to another pattern are ignored (a script may pass all of its constants);
    names no pattern knows raise TypeError, so a typo is never silently dropped. None means
    "use the default".
    """
    own = pattern_options(pattern)
    known = {name for other in PATTERNS for name in pattern_options(other)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown traffic option(s) {unknown}; pattern {pattern!r} takes "
                        f"{sorted(own)}, all patterns together take {sorted(known)}")
    used = {name: options[name] for name in own if options.get(name) is not None}
    arrivals = PATTERNS[pattern.strip().lower()](mean_rps, duration_s, rng, **used)
    return arrivals, {**own, **used}


def arrival_times(pattern: str, mean_rps: float, duration_s: float, rng: np.random.Generator,
                  **options: Any) -> np.ndarray:
    """Arrival times (s, ascending, all < duration_s) of one pattern; see `build_schedule`."""
    arrivals, _ = generate_arrivals(pattern, mean_rps, duration_s, rng, options)
    return arrivals.times_s
