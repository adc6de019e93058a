"""An upper bound on SLA attainment that no strategy could beat on a run's arrivals.

The relaxation: one GPU, no swaps, no batch granularity, each request of model m needing only
its model's best per-request time w_m = min over profiled batch sizes b of P_m(b) / b, any time
within its own window [arrival, arrival + SLA]. Any real schedule is feasible there: a batch of
b requests runs in an interval that lies inside the window of each of its on-time requests (it
starts after they all arrived and ends before their deadlines), and giving each a 1/b share of
that interval gives it P_m(b) / b >= w_m of work in its window, one GPU at a time; swaps only
take time away. So the most requests the relaxation can complete on time bounds the SLA-met
requests of every strategy, and dividing by the requests issued bounds SLA attainment.

Within a run every request has the same SLA, so windows are ordered alike (a later arrival has a
later deadline) and a set of requests fits exactly when first-in-first-out service meets every
deadline. The largest such set comes from Kise, Ibaraki and Mine's rule (1978, "A solvable case
of the one-machine scheduling problem with ready and due times"): take the requests in arrival
order; when one would be late, drop the request whose removal leaves the earliest completion
(ties to the earlier candidate). tests/test_bound.py checks it against brute force on
small instances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sincere.profiles.profile_set import ProfileSet

TOLERANCE_S = 1e-9  # a completion this close to its deadline is on time (float sums)


def most_on_time(arrival_s: Sequence[float], work_s: Sequence[float], sla_s: float) -> int:
    """The most requests that one machine can finish within [arrival, arrival + sla_s], each
    needing ``work_s`` of it.

    Kise-Ibaraki-Mine, made fast for few distinct work values: the kept requests are served in
    arrival order; when a new one would be late, removing kept request k brings its completion
    forward by min(p_k + idle before k, the least wait of any request after k), so for each work
    value only its latest kept request can be the best to remove (the waits after it are the
    fewest); the new request itself is the other candidate. tests/test_bound.py checks the
    result against brute force.
    """
    order = np.argsort(np.asarray(arrival_s, dtype=float), kind="stable")
    arrivals = np.asarray(arrival_s, dtype=float)[order].tolist()
    works = np.asarray(work_s, dtype=float)[order].tolist()
    values = set(works)
    kept_r: list[float] = []  # kept requests in service order: arrival, work, start
    kept_p: list[float] = []
    kept_start: list[float] = []
    finish_s = -math.inf
    for r, p in zip(arrivals, works, strict=True):
        deadline_s = r + sla_s + TOLERANCE_S
        start_s = max(finish_s, r)
        if start_s + p <= deadline_s:
            kept_r.append(r)
            kept_p.append(p)
            kept_start.append(start_s)
            finish_s = start_s + p
            continue
        best_gain, best_k = p, len(kept_p)  # dropping the new request gains its own work
        for k in _latest_of_each(kept_p, values):
            least_wait = start_s - r
            for j in range(k + 1, len(kept_p)):
                least_wait = min(least_wait, kept_start[j] - kept_r[j])
            idle_s = kept_start[k] - (kept_start[k - 1] + kept_p[k - 1]) if k else math.inf
            gain = min(kept_p[k] + idle_s, least_wait)
            if start_s + p - gain <= deadline_s and (
                    gain > best_gain + TOLERANCE_S
                    or (gain >= best_gain - TOLERANCE_S and k < best_k)):
                best_gain, best_k = gain, k
        if best_k == len(kept_p):
            continue
        del kept_r[best_k], kept_p[best_k], kept_start[best_k]
        finish_s = kept_start[best_k - 1] + kept_p[best_k - 1] if best_k else -math.inf
        for j in range(best_k, len(kept_p)):
            kept_start[j] = max(finish_s, kept_r[j])
            finish_s = kept_start[j] + kept_p[j]
        start_s = max(finish_s, r)
        kept_r.append(r)
        kept_p.append(p)
        kept_start.append(start_s)
        finish_s = start_s + p
    return len(kept_r)


def _latest_of_each(works: list[float], values: set[float]) -> list[int]:
    """The index of the last kept request of each work value that is kept."""
    latest: dict[float, int] = {}
    for k in range(len(works) - 1, -1, -1):
        latest.setdefault(works[k], k)
        if len(latest) == len(values):
            break
    return sorted(latest.values())


def sla_attainment_bound(arrival_s: Sequence[float], models: Sequence[str], sla_s: float,
                         profiles: ProfileSet, max_new_tokens: int,
                         issued: int | None = None) -> float | None:
    """The bound on SLA attainment of a run whose requests arrived at ``arrival_s`` for
    ``models`` (see the module's docstring); None without requests."""
    issued = len(arrival_s) if issued is None else issued
    if not issued:
        return None
    best = {m: profiles[m].least_time_per_request_s(max_new_tokens) for m in set(models)}
    return most_on_time(arrival_s, [best[m] for m in models], sla_s) / issued
