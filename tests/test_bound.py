"""The SLA-attainment bound: its optimisation against brute force, and no strategy above it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sincere.profiles.profile_set import load_profiles
from sincere.scheduling.bound import most_on_time, sla_attainment_bound
from sincere.scheduling.strategies import STRATEGIES, make_strategy
from sincere.simulation.simulator import simulate
from sincere.traffic.schedule import build_schedule


def brute_force(arrival_s: list[float], work_s: list[float], sla_s: float) -> int:
    """The largest set of requests that first-in-first-out service finishes on time (with
    windows of one length, a set fits on one machine, even with preemption, exactly when it
    does), found by trying every subset from the largest down."""
    order = np.argsort(arrival_s, kind="stable")
    jobs = [(arrival_s[i], work_s[i]) for i in order]
    for size in range(len(jobs), 0, -1):
        for subset in itertools.combinations(jobs, size):
            finish_s = -np.inf
            for arrival, work in subset:
                finish_s = max(finish_s, arrival) + work
                if finish_s > arrival + sla_s + 1e-9:
                    break
            else:
                return size
    return 0


@pytest.mark.parametrize("seed", range(6))
def test_the_bound_is_the_relaxation_s_optimum_on_small_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(300):
        n = int(rng.integers(1, 10))
        sla_s = float(rng.choice([1.0, 2.0, 3.0, 5.0]))
        values = rng.choice([0.3, 0.7, 1.1, 1.9, 2.5], size=3)
        arrival_s = np.round(rng.uniform(0, 8, n), 1).tolist()
        work_s = rng.choice(values, size=n).tolist()
        assert most_on_time(arrival_s, work_s, sla_s) == brute_force(arrival_s, work_s,
                                                                     sla_s), (arrival_s, work_s)


@pytest.mark.parametrize("profile", ["h100-orig_noncc", "h100-orig_cc"])
@pytest.mark.parametrize("pattern", ["gamma", "bursty"])
def test_no_strategy_is_ever_above_the_bound(profile: str, pattern: str) -> None:
    profiles = load_profiles(profile)
    mix = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}
    for mean_rps, sla_s in ((4.0, 40.0), (12.0, 60.0)):
        schedule = build_schedule(pattern, mean_rps, 300.0, 3, mix)
        bound = sla_attainment_bound(schedule.scheduled_s, schedule.models, sla_s, profiles, 50)
        for name in STRATEGIES:
            outcome = simulate(schedule, make_strategy(name), profiles, sla_s, 50, 300.0,
                               seed=3, jitter=False)
            met = sum(r.row()["sla_met"] for r in outcome.requests)
            assert met / len(schedule) <= bound, (name, mean_rps)
