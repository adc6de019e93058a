"""A batch's time follows its longest prompt (sincere.profiles.length_term): the fit, the profile
that carries it, the simulator that times batches with it, and the prompt counts it is fed."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sincere.profiles.length_term import (
    LengthFit,
    fit_length_term,
    prompt_token_counts,
    served_prompt_tokens,
)
from sincere.profiles.profile_set import ProfileSet, read_batch_profile
from sincere.scheduling.strategies import make_strategy
from sincere.simulation.simulator import simulate
from sincere.traffic.schedule import Schedule
from tests.profile_fixtures import model

ALPHA = {1: 0.10, 4: 0.20, 8: 0.50}  # the size's own cost, seconds
PER_TOKEN_S = 1e-4  # per request and token of the longest prompt


def exact(b: int, longest: int) -> float:
    return ALPHA[b] + PER_TOKEN_S * b * longest


def test_the_fit_recovers_each_size_and_the_length_share() -> None:
    rows = [(b, longest, exact(b, longest)) for b in ALPHA for longest in (40, 120, 300)]
    fit = fit_length_term(rows)
    assert fit is not None and fit.rows == 9
    assert fit.sizes == (1, 4, 8)
    assert fit.alpha_s == pytest.approx(tuple(ALPHA.values()))
    assert fit.per_token_s == pytest.approx(PER_TOKEN_S)
    assert fit.relative_sd == pytest.approx(0.0, abs=1e-9)
    # Between sizes alpha is linear; below the smallest it is the smallest's.
    assert fit.processing_s(6, 100) == pytest.approx(0.35 + PER_TOKEN_S * 600)
    assert fit.processing_s(1, 0) == pytest.approx(0.10)


def test_the_spread_is_that_of_measured_over_predicted() -> None:
    rng = np.random.default_rng(0)
    rows = [(b, longest, exact(b, longest) * (1 + rng.normal(0, 0.05)))
            for b in ALPHA for longest in (40, 80, 120, 200, 300) for _ in range(4)]
    fit = fit_length_term(rows)
    assert fit is not None
    assert fit.relative_sd == pytest.approx(0.05, rel=0.25)
    assert fit.per_token_s == pytest.approx(PER_TOKEN_S, rel=0.15)


@pytest.mark.parametrize("rows", [
    [],
    [(4, 100, 0.3), (4, 200, 0.4), (4, 300, 0.5)],  # one size
    [(1, 50, 0.1), (4, 50, 0.3), (1, 50, 0.11), (4, 50, 0.31)],  # no length ever differs
    [(1, 50, 0.2), (1, 300, 0.1), (4, 50, 0.5), (4, 300, 0.4), (8, 100, 0.9)],  # longer: faster
])
def test_no_fit_where_the_data_cannot_tell_a_length_effect(rows) -> None:
    assert fit_length_term(rows) is None


def write_batch_profile(path: Path, with_longest: bool) -> Path:
    columns = ["model", "batch_size", "run", "max_new_tokens", "prompt_tokens_mean",
               "processing_time_s", "throughput_rps", "output_tokens_per_s", "peak_gpu_mem_gib",
               "oom"] + (["prompt_tokens_max"] if with_longest else [])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        run = 0
        for b in ALPHA:
            for longest in (40, 300):
                run += 1
                seconds = exact(b, longest)
                writer.writerow(["m", b, run, 50, longest / 2, seconds, b / seconds,
                                 50 * b / seconds, "", "False"]
                                + ([longest] if with_longest else []))
    return path


@pytest.mark.parametrize("with_longest", [True, False])
def test_a_profile_has_a_length_term_only_where_it_recorded_longest_prompts(
        tmp_path: Path, with_longest: bool) -> None:
    curves, _, _ = read_batch_profile(write_batch_profile(tmp_path / "batch.csv", with_longest))
    curve = curves["m"][50]
    assert curve.sizes == (1, 4, 8)  # P(b) as before: the mean at each size
    if with_longest:
        assert curve.length is not None
        assert curve.length.per_token_s == pytest.approx(PER_TOKEN_S)
    else:
        assert curve.length is None


def length_profiles(fit: LengthFit | None) -> ProfileSet:
    base = model("a", load_s=1.0, unload_s=0.0)
    curve = dataclasses.replace(base.curves[50], length=fit)
    profile = dataclasses.replace(base, curves={50: curve})
    return ProfileSet({"a": profile}, "test", "off", "loading.csv", "batch.csv")


FIT = LengthFit((1, 4, 8), (0.1, 0.2, 0.5), PER_TOKEN_S, 0.0, 9)


def immediate_batches(profiles: ProfileSet, tokens: list[int | None] | None):
    # Requests 10 s apart: each one is a batch of its own.
    times = np.arange(4) * 10.0
    schedule = Schedule(times, ("a",) * 4, ("",) * 4, (None,) * 4, {})
    outcome = simulate(schedule, make_strategy("Immediate"), profiles, sla_s=60.0,
                       max_new_tokens=50, duration_s=40.0, jitter=False, served_tokens=tokens)
    return [b.processing_s for b in outcome.batches], outcome


def test_the_simulator_times_a_batch_by_its_longest_prompt() -> None:
    tokens = [50, 500, 100, None]
    processing, outcome = immediate_batches(length_profiles(FIT), tokens)
    # P(1, longest) where the prompt is known; P(1) = 2 s of the profile's curve where not.
    assert processing == pytest.approx([0.1 + 0.005, 0.1 + 0.05, 0.1 + 0.01, 2.0])
    assert [r.prompt_tokens for r in outcome.requests] == tokens  # as the server records them


def test_without_prompt_counts_or_a_length_term_the_simulator_uses_the_size() -> None:
    assert immediate_batches(length_profiles(FIT), None)[0] == pytest.approx([2.0] * 4)
    assert immediate_batches(length_profiles(None), [50, 500, 100, 10])[0] \
        == pytest.approx([2.0] * 4)


def test_prompt_counts_are_the_engines(tiny_models: Path, engine) -> None:
    prompts = {"p1": "A short prompt.", "p2": "A longer prompt, " * 30, "p3": "Three words here"}
    counts = prompt_token_counts(prompts, ["gemma-7b", "llama3-8b"], tiny_models)
    for alias in ("gemma-7b", "llama3-8b"):
        assert counts[alias] == {pid: engine.count_tokens(alias, text)
                                 for pid, text in prompts.items()}
    assert served_prompt_tokens(["gemma-7b", "llama3-8b", "granite-7b"], ["p2", "p1", "p1"],
                                counts) == [counts["gemma-7b"]["p2"], counts["llama3-8b"]["p1"],
                                            None]


def test_simulate_experiments_times_batches_by_the_prompts_the_generator_sends(
        tmp_path: Path, tiny_models: Path, workloads: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import shutil

    import pandas as pd

    import simulate_experiments
    from sincere.assets.architectures import DEFAULT_MODEL_MIX
    from sincere.profiles.profile_set import DEFAULT_PROFILES_DIR

    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    shutil.copy(DEFAULT_PROFILES_DIR / "model_loading_times_h100-orig_noncc_example.csv",
                profiles_dir / "model_loading_times_lt_noncc_1.csv")
    rows = pd.read_csv(write_batch_profile(tmp_path / "one.csv", with_longest=True))
    pd.concat([rows.assign(model=m) for m in DEFAULT_MODEL_MIX]).to_csv(
        profiles_dir / "batch_profiling_lt_noncc_1.csv", index=False)
    results = tmp_path / "sim"
    grid = ["--results-dir", str(results), "--profiles", "lt_noncc", "--profiles-dir",
            str(profiles_dir), "--strategies", "Immediate", "--patterns", "gamma", "--means",
            "1", "--slas", "40", "--repeats", "1", "--duration-s", "30", "--workers", "1",
            "--workloads-dir", str(workloads)]

    assert simulate_experiments.main([*grid, "--models-dir", str(tiny_models)]) == 0
    assert "timed by their longest prompt" in capsys.readouterr().out
    run_dir = results / "immediate__gamma__rate1__sla40__rep0"
    assert json.loads((run_dir / "run.json").read_text())["params"]["length_term"] is True
    requests = pd.read_csv(run_dir / "requests.csv")
    assert requests.prompt_tokens.notna().all() and (requests.prompt_tokens > 1).all()
    # The same prompts the generator would send: its schedule, from the same seed.
    schedule = pd.read_csv(run_dir / "schedule.csv", dtype={"prompt_id": str})
    assert schedule.prompt_id.notna().all()

    # Without the tokenizers the batches are timed by their size, and that run differs.
    assert simulate_experiments.main([*grid, "--models-dir", str(tmp_path / "none")]) == 2
    captured = capsys.readouterr()
    assert "timed by their size alone" in captured.out
    assert "length_term: true -> false" in captured.err


def test_the_fit_to_the_profile_judges_a_batch_by_its_longest_prompt() -> None:
    import pandas as pd

    from sincere.runs.fidelity import longest_prompts, profile_fit

    profiles = length_profiles(FIT)
    # Two batches of one model that ran exactly as the length term says, no swaps.
    batches = pd.DataFrame({"batch_id": [1, 2], "model": ["a", "a"], "batch_size": [4, 1],
                            "start_s": [0.0, 1.0], "swap_from": [None, None],
                            "swap_s": [0.0, 0.0],
                            "processing_s": [exact(4, 300), exact(1, 40)]})
    requests = pd.DataFrame({"batch_id": [1, 1, 1, 1, 2, None],
                             "prompt_tokens": [20, 300, 50, None, 40, 900]})
    assert longest_prompts(requests) == {1: 300, 2: 40}  # a request of no batch is not one's
    fit = profile_fit(batches, profiles, 50, requests)
    assert fit["processing_vs_profile"] == pytest.approx(1.0)
    # Without the prompts each batch is judged by its size alone, against the curve's P(4) =
    # 3 s and P(1) = 2 s (tests/profile_fixtures.py): batch 1 took 0.2 + 1e-4 * 4 * 300 = 0.32 s,
    # batch 2 0.1 + 1e-4 * 40 = 0.104 s; the mean of 0.32 / 3 and 0.104 / 2 is 0.07933.
    by_size = profile_fit(batches, profiles, 50)["processing_vs_profile"]
    assert by_size == pytest.approx((0.32 / 3.0 + 0.104 / 2.0) / 2)
