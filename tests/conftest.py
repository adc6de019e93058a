"""Session-wide fixtures: the three tiny models and a synthetic workloads folder, built once.

Both are made by the project's own code (``prepare_models`` and ``build_workloads``), exactly as
``download_models.py --random --tiny`` and ``generate_workloads_jsonl.py --synthetic N`` make
them, so tests load them as every stage would. Treat them as read-only: a test that needs to
change a model copies its folder first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sincere.assets.architectures import DEFAULT_MODEL_MIX, HUB_IDS

WORKLOAD_PROMPTS = 200


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding granite-7b, gemma-7b and llama3-8b as tiny float32 models,
    with manifest.csv (a few seconds, once per session)."""
    from sincere.assets.models import prepare_models

    models_dir = tmp_path_factory.mktemp("models")
    outcomes = prepare_models(HUB_IDS, models_dir, "tiny", seed=0)
    assert [o.status for o in outcomes] == ["built"] * len(HUB_IDS), outcomes
    return models_dir


@pytest.fixture(scope="session")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workloads folder of WORKLOAD_PROMPTS synthetic prompts with the default model mix."""
    from sincere.assets.workloads import build_workloads

    workloads_dir = tmp_path_factory.mktemp("workloads")
    build_workloads(workloads_dir, DEFAULT_MODEL_MIX, seed=0, synthetic=WORKLOAD_PROMPTS)
    return workloads_dir


# The experiment-server tests generate this many new tokens a request (short, so runs are fast).
SERVER_TEST_NEW_TOKENS = 8


@pytest.fixture(scope="session")
def server_workloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompts of similar length (about 30 words), so that a batch's time depends on its size
    and not on its longest prompt: the server tests compare runs with a profile."""
    import numpy as np

    from sincere.assets.workloads import synthetic_prompt, write_workloads

    rng = np.random.default_rng(0)
    prompts = [synthetic_prompt(rng, 30) for _ in range(100)]
    folder = tmp_path_factory.mktemp("server_workloads")
    write_workloads(prompts, [list(DEFAULT_MODEL_MIX)[i % 3] for i in range(100)], folder)
    return folder


@pytest.fixture(scope="session")
def tiny_profile(tiny_models: Path, server_workloads: Path,
                 tmp_path_factory: pytest.TempPathFactory):
    """A profile set of the tiny models measured on this machine (with server_workloads'
    prompts), as the scheduler reads it."""
    from sincere.assets.workloads import read_workloads
    from tests.server_support import measure_profile, one_cpu_thread

    one_cpu_thread()
    prompts = list(read_workloads(server_workloads).values())
    return measure_profile(tiny_models, prompts, tmp_path_factory.mktemp("profiles"),
                           SERVER_TEST_NEW_TOKENS)


@pytest.fixture(scope="session")
def engine(tiny_models: Path):
    """One engine on the tiny models, every model in its host cache; runs share it."""
    from sincere.engine.engine import Engine
    from tests.server_support import one_cpu_thread

    one_cpu_thread()
    engine = Engine(tiny_models, host_cache=True, max_new_tokens=SERVER_TEST_NEW_TOKENS)
    for model in HUB_IDS:
        engine.prefetch(model)
    return engine


# The grid point of the shared finished real run: run_experiments.py, server and generator as
# subprocesses, Immediate at a constant 3 requests/s for 4 s, SLA 5 s.
FINISHED_RUN = "immediate__constant__rate3__sla5__rep0"


@dataclass(frozen=True)
class FinishedGrid:
    results: Path  # the results folder: FINISHED_RUN in it, complete
    stdout: str  # what run_experiments.py printed

    @property
    def run_dir(self) -> Path:
        return self.results / FINISHED_RUN


@pytest.fixture(scope="session")
def finished_grid(tiny_models: Path, server_workloads: Path, tiny_profile,
                  tmp_path_factory: pytest.TempPathFactory) -> FinishedGrid:
    """One finished real run, made once for the runner, fault and contract tests (each run
    costs the start of a server and a generator). Read-only: a test that adds to it or changes
    it works on a copy (shutil.copytree)."""
    import subprocess

    from tests.server_support import runner_argv

    results = tmp_path_factory.mktemp("finished_grid") / "results"
    done = subprocess.run(runner_argv(results, tiny_models, server_workloads, tiny_profile,
                                      ["Immediate"]), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return FinishedGrid(results, done.stdout)
