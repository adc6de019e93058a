"""How long process_results.py takes, and how its time grows with the runs.

    python benchmarks/bench_process_results.py results_sim/noncc results_sim/cc
    python benchmarks/bench_process_results.py results_sim/noncc results_sim/cc \\
        --sizes 54 108 216 --baseline /tmp/base --rounds 3

Runs `process_results.py` as a user does (a fresh interpreter: reading the runs, the tables, the
figures, the report) on the runs of RESULTS_DIRS, or on SIZES of them: evenly spaced run
directories with the same names in every folder, so that the CC pairs stay pairs. With BASELINE
(another checkout of this repository, e.g. `git archive <commit> | tar -x -C /tmp/base`), the same
runs are processed by both checkouts in every round, one after the other, and the ratio is
taken between timings of the same moment: on a shared machine the load moves more than many a
change does. Prints the median wall time and CPU time (its worker processes included) of each,
the median over rounds of the wall-time ratio baseline / this, and the load average met (1
minute, at the start of each round); writes nothing but in a temporary folder.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sincere.cli import parse_constants  # noqa: E402
from sincere.runs.rundirs import find_run_dirs  # noqa: E402

RESULTS_DIRS = ["results_sim/noncc", "results_sim/cc"]  # folders of run directories
SIZES = [0]  # total runs to time it on, taken evenly from every folder; 0: all of them
BASELINE = ""  # another checkout timed in the same rounds, for the ratio; empty: none
ROUNDS = 3  # timed rounds (the median is reported)


def run_subsets(roots: list[Path], total: int, into: Path) -> list[Path]:
    """Folders under ``into`` that link ``total`` runs (all with 0), the same run names taken
    from every root, evenly spaced in name order."""
    runs = [{run.name: run for run in find_run_dirs([root])} for root in roots]
    names = sorted(set.intersection(*(set(r) for r in runs))) if total else []
    each = -(-total // len(roots)) if total else 0
    if total and not 0 < each <= len(names):
        raise SystemExit(f"bench_process_results: {total} runs asked; the folders have "
                         f"{len(names)} run names in common")
    chosen = [names[i * len(names) // each] for i in range(each)] if total else None
    folders = []
    for i, found in enumerate(runs):
        folder = into / f"{total}_{i}"
        folder.mkdir(parents=True)
        for name in chosen if chosen is not None else found:
            (folder / name).symlink_to(found[name])
        folders.append(folder)
    return folders


def timed_run(checkout: Path, folders: list[Path], out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one `process_results.py` of ``checkout`` on ``folders``; the CPU time
    counts the worker processes it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(checkout / "process_results.py"),
                           *map(str, folders), "--out", str(out)],
                          capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_process_results: {checkout} failed:\n{done.stderr[-2000:]}")
    return wall_s, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_constants(globals(), argv, positional="RESULTS_DIRS")
    this = Path(__file__).resolve().parent.parent
    checkouts = {"this": this}
    if cfg.BASELINE:
        checkouts["baseline"] = Path(cfg.BASELINE).resolve()
    roots = [Path(d) for d in cfg.RESULTS_DIRS]
    print(f"process_results.py on {', '.join(map(str, roots))}: median of {cfg.ROUNDS} "
          f"rounds, {os.cpu_count()} CPUs")
    header = f"{'runs':>6}{'this wall s':>13}{'this CPU s':>12}"
    if cfg.BASELINE:
        header += f"{'baseline wall s':>17}{'baseline CPU s':>16}{'baseline/this':>15}"
    print(header + f"{'load average':>14}")
    with tempfile.TemporaryDirectory(prefix="bench_process_results_") as scratch:
        for size in cfg.SIZES:
            folders = run_subsets(roots, size, Path(scratch))
            runs = sum(1 for folder in folders for _ in folder.iterdir())
            timings: dict[str, list[tuple[float, float]]] = {name: [] for name in checkouts}
            loads = []
            for _ in range(cfg.ROUNDS):
                loads.append(os.getloadavg()[0])
                for name, checkout in checkouts.items():
                    out = Path(scratch) / f"report_{name}"
                    timings[name].append(timed_run(checkout, folders, out))
            wall = {n: statistics.median(w for w, _ in t) for n, t in timings.items()}
            cpu = {n: statistics.median(c for _, c in t) for n, t in timings.items()}
            line = f"{runs:>6}{wall['this']:>13.2f}{cpu['this']:>12.2f}"
            if cfg.BASELINE:  # the median of each round's ratio: the same moment's load
                ratio = statistics.median(b / t for (b, _), (t, _) in zip(
                    timings["baseline"], timings["this"], strict=True))
                line += f"{wall['baseline']:>17.2f}{cpu['baseline']:>16.2f}{ratio:>15.2f}"
            print(line + f"{min(loads):>7.1f}-{max(loads):<6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
