"""The study presets of run_pipeline.sh, and the pipeline's plan and checks before it starts.

``STUDY=original bash run_pipeline.sh`` runs the original study's grid with the GPU defaults:
the preset's values apply wherever the environment sets none, so each stays overridable
(``STUDY=original REPEATS=1 ...``). Before anything long starts, the pipeline runs this module:
it says what the pipeline will do with which values, on which machine (its GPU and CC mode),
and checks in a second what would otherwise fail hours in (the Hub token, model folders of
another kind, free disk, a GPU), each failure with its fix; the experiments' own plan (runs
done and to do, estimated duration) is run_experiments.py's (``DRY_RUN``).

    python -m sincere.grid.study --study original --preset     # NAME VALUE lines
    python -m sincere.grid.study --study original --model-kind hub ...   # the pipeline's plan

No torch here: the checks fail in seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sincere.assets.architectures import FULL_SIZE, HUB_IDS, TINY
from sincere.assets.model_store import is_complete, read_marker
from sincere.cli import parse_constants
from sincere.grid.plan import format_hours, results_gb
from sincere.grid.points import expand_grid
from sincere.host.preflight import (
    Check,
    DiskNeed,
    Gpu,
    find_gpu,
    free_disk,
    gpu_check,
    hub_token,
)


@dataclass(frozen=True)
class Study:
    """A named preset: what it is, and run_pipeline.sh's constants it sets (as the shell
    writes them), each with why."""

    about: str
    values: tuple[tuple[str, str, str], ...]  # (constant, value, why)

    def as_dict(self) -> dict[str, str]:
        return {name: value for name, value, _why in self.values}


STUDIES = {
    "original": Study(
        "the original study's grid (../shared/reference/README.md) on one GPU VM, with the "
        "engine built for it; run it once on a CC-on and once on a CC-off VM",
        (("MODEL_KIND", "hub", "the real weights of granite-7b, gemma-7b, llama3-8b (47 GB)"),
         ("DECODE", "static",
          "the static compiled engine: 1.1-5.7 s a batch on an H100, against about 10 s eager"),
         ("MAX_BATCH", "0", "profile every batch size until out-of-memory"),
         ("PROFILE_TIME_LIMIT_S", "14400",
          "4 h: each new size compiles (41-57 s on the H100) before its runs, about 45 sizes "
          "a model up to out-of-memory, three models"),
         ("DURATION_S", "1200", "20-minute runs"),
         ("MEANS", "4 8 12", "requests per second"),
         ("SLAS", "40 60 80", "seconds"),
         ("PATTERNS", "gamma bursty ramp", "the three traffic patterns"),
         ("STRATEGIES",
          "BestBatch BestBatch+Timer SelectBatch+Timer BestBatch+PartialBatch+Timer MaxGoodput",
          "the seed strategies and MaxGoodput"),
         ("REPEATS", "2", "runs per cell: the fewest that give a confidence interval"))),
}

# What full-size models are: the settings that need a GPU (REQUIRE_GPU=auto).
FULL_SIZE_KINDS = ("hub", "random")
TINY_GB_PER_MODEL = max(arch.size_gb(4) for arch in TINY.values())

# The flags: run_pipeline.sh's constants that the plan and the checks read (it passes each).
STUDY = ""  # the study preset ("" = none; original)
PRESET = False  # print the preset's values, NAME VALUE a line, and exit (run_pipeline.sh reads it)
MODEL_KIND = "tiny"  # tiny, random or hub
MODELS_DIR = "models"  # model folders
WORKLOADS_DIR = "workloads"  # prompt files
PROMPTS = 500  # synthetic prompts to make (0 = read INSTRUCTLAB_DIR)
MAX_BATCH = 16  # profiling: largest batch size (0 = until out-of-memory)
PROFILE_TIME_LIMIT_S = 150  # profiling: time limit of run_profiling.sh
RESULTS_DIR = "results"  # run directories (and RESULTS_DIR/sim)
STRATEGIES = ["BestBatch+Timer"]  # the grid: strategies
PATTERNS = ["gamma"]  # the grid: traffic patterns
MEANS = [6.0]  # the grid: mean request rates, requests per second
SLAS = [4.0]  # the grid: SLAs, seconds
REPEATS = 1  # the grid: runs per cell
DURATION_S = 30.0  # the grid: seconds of traffic per run
DECODE = "eager"  # batch engine: eager or static
REQUIRE_GPU = "auto"  # auto: for full-size models or a STUDY; 1: always; 0: never
DRY_RUN = False  # plan only: failed checks are reported, not fatal
_FLAGS = ("STUDY", "PRESET", "MODEL_KIND", "MODELS_DIR", "WORKLOADS_DIR", "PROMPTS", "MAX_BATCH",
          "PROFILE_TIME_LIMIT_S", "RESULTS_DIR", "STRATEGIES", "PATTERNS", "MEANS", "SLAS",
          "REPEATS", "DURATION_S", "DECODE", "REQUIRE_GPU", "DRY_RUN")


def parse_settings(argv: Sequence[str] | None = None):
    """The flags above (run_pipeline.sh's constants) from ``argv``; ``--help`` lists each with
    its comment."""
    return parse_constants({name: value for name, value in globals().items()
                            if name in _FLAGS or name in ("__file__", "__doc__")}, argv)


def preset_lines(name: str) -> list[str]:
    """``NAME VALUE`` lines of the preset ``name`` (none without one)."""
    if not name:
        return []
    return [f"{key} {value}" for key, value, _why in STUDIES[name].values]


def shell_words(value: object) -> str:
    """A constant as the shell wrote it: a list's items joined by spaces, ``1200.0`` as
    ``1200``."""
    if isinstance(value, (list, tuple)):
        return " ".join(shell_words(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def study_lines(name: str, values: Mapping[str, object]) -> list[str]:
    """The preset and where the values in effect differ from it (set in the environment)."""
    study = STUDIES[name]
    lines = [f"study {name}: {study.about}"]
    for key, preset, why in study.values:
        given = shell_words(values.get(key, preset))
        note = f"{why}" if given == preset else f"set in the environment; the preset's: {preset}"
        lines.append(f"  {key}={given}  ({note})")
    return lines


def models_to_fetch(models_dir: Path, kind: str) -> tuple[list[str], list[str]]:
    """(the aliases without a complete folder of ``kind``, the complete folders of another
    kind, described). download_models.py fetches the missing ones but keeps a complete folder
    of another kind as it is: those must come too, into another MODELS_DIR."""
    wanted, other = [], []
    for alias in HUB_IDS:
        folder = models_dir / alias
        found = (read_marker(folder) or {}).get("kind", "unknown") if is_complete(folder) \
            else None
        if found != kind:
            wanted.append(alias)
        if found not in (None, kind):
            other.append(f"{folder} is a {found} model")
    return wanted, other


def model_gb(kind: str, aliases: Sequence[str]) -> float:
    """The weights' GB of ``aliases`` built or downloaded as ``kind`` (bfloat16 full size)."""
    if kind == "tiny":
        return TINY_GB_PER_MODEL * len(aliases)
    return sum(FULL_SIZE[alias].size_gb(2) for alias in aliases)


def gpu_needed_by(cfg) -> str:
    """The settings that need a GPU here ("" when none does), by REQUIRE_GPU."""
    if str(cfg.REQUIRE_GPU) == "0":
        return ""
    if str(cfg.REQUIRE_GPU) == "1":
        return "REQUIRE_GPU=1"
    if cfg.STUDY:
        return f"STUDY={cfg.STUDY}"
    return f"MODEL_KIND={cfg.MODEL_KIND}" if cfg.MODEL_KIND in FULL_SIZE_KINDS else ""


def checks(cfg, gpu: Gpu) -> list[Check]:
    """The pipeline's checks before it starts, in the order a user fixes them."""
    missing, other = models_to_fetch(Path(cfg.MODELS_DIR), cfg.MODEL_KIND)
    found = [hub_token(missing if cfg.MODEL_KIND == "hub" else [])]
    if other:
        found.append(Check("models", False,
                           f"{'; '.join(other)}, but MODEL_KIND is {cfg.MODEL_KIND} and "
                           "download_models.py keeps a complete model as it is: set MODELS_DIR "
                           "to another folder, or remove those folders"))
    points = expand_grid(cfg.STRATEGIES, cfg.PATTERNS, cfg.MEANS, cfg.SLAS, cfg.REPEATS)
    found += free_disk([
        DiskNeed(Path(cfg.MODELS_DIR), model_gb(cfg.MODEL_KIND, missing), "models", "MODELS_DIR"),
        DiskNeed(Path(cfg.RESULTS_DIR), 2 * results_gb(points, cfg.DURATION_S), "results",
                 "RESULTS_DIR")])
    without = ("DRY_RUN=1 shows the plan without one; REQUIRE_GPU=0 runs on this CPU anyway "
               "(full-size models take minutes a batch there)")
    found.append(gpu_check(gpu, gpu_needed_by(cfg), without))
    return found


def stage_lines(cfg) -> list[str]:
    """What stages 1-3 will do (run_pipeline.sh says whether the profile is there, and the
    experiments' plan is run_experiments.py's)."""
    missing, _other = models_to_fetch(Path(cfg.MODELS_DIR), cfg.MODEL_KIND)
    how = "downloaded" if cfg.MODEL_KIND == "hub" else "built"
    models = (f"{', '.join(missing)} to be {how} ({cfg.MODEL_KIND}, "
              f"{model_gb(cfg.MODEL_KIND, missing):.1f} GB)" if missing else "all there")
    prompts_there = any(Path(cfg.WORKLOADS_DIR).glob("*.json"))
    prompts = ("there" if prompts_there else
               f"{cfg.PROMPTS} synthetic to make" if cfg.PROMPTS > 0 else "from INSTRUCTLAB_DIR")
    sizes = "until out-of-memory" if cfg.MAX_BATCH <= 0 else f"up to {cfg.MAX_BATCH}"
    return [f"1/6 models in {cfg.MODELS_DIR}: {models}",
            f"2/6 prompts in {cfg.WORKLOADS_DIR}: {prompts}",
            f"3/6 profiles, engine {cfg.DECODE}: load times, then batch sizes {sizes}, for at "
            f"most {format_hours(cfg.PROFILE_TIME_LIMIT_S)} (PROFILE_TIME_LIMIT_S)"]


def main(argv: list[str] | None = None) -> int:
    """Print a preset (--preset), or the pipeline's plan and checks: exit 2 when a check
    failed (0 with DRY_RUN), 0 otherwise."""
    cfg = parse_settings(argv)
    if cfg.STUDY and cfg.STUDY not in STUDIES:
        print(f"pipeline: no study preset {cfg.STUDY!r}; known: {', '.join(STUDIES)}",
              file=sys.stderr)
        return 2
    if cfg.PRESET:
        print("\n".join(preset_lines(cfg.STUDY)))
        return 0
    if cfg.STUDY:
        for line in study_lines(cfg.STUDY, vars(cfg)):
            print(f"pipeline: {line}")
    gpu = find_gpu()
    print(f"pipeline: this machine: {gpu.describe()}")
    found = checks(cfg, gpu)
    print("pipeline: checks before starting:")
    print("\n".join(check.line() for check in found))
    for line in stage_lines(cfg):
        print(f"pipeline: {line}")
    failed = [check for check in found if not check.ok]
    if failed and not cfg.DRY_RUN:
        print(f"pipeline: stopped before starting anything: {len(failed)} check"
              f"{'s' * (len(failed) != 1)} failed (FAIL above, each with its fix); DRY_RUN=1 "
              "shows the whole plan anyway", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
