"""Summarise run directories into tables, figures and one self-contained report.html.

Reads every run directory (a folder with run.json) under the given results folders, measured
(engine hf) or simulated (engine sim), and writes into OUT: summary_runs.csv, summary_cells.csv,
cc_comparison.csv, sim_vs_real.csv, the PNG figures and report.html. Give several folders (say
one copied from a confidential VM and one from an ordinary VM) to compare them: runs are labelled
by the cc_mode in their run.json and paired cell by cell; simulated runs are labelled simulated
and never paired with measured ones.

    python process_results.py results/                      # -> results/report/
    python process_results.py results_cc/ results_noncc/ --out comparison/
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sincere.cli import parse_constants
from sincere.results import plots, report, run_plots, tables
from sincere.results import summary as runsummary
from sincere.results.drawing import FigurePool
from sincere.runs import metrics, rundirs

RESULTS_DIRS = ["results"]  # folders holding run directories (searched two levels deep)
OUT = ""  # output folder; empty: <first results dir>/report/
TIMELINE_RUN = ""  # run id or run directory for the timeline figures; empty: a representative run
CONFIDENCE = 0.95  # confidence level of every interval (Student t; Fieller for ratios)
PAGE_METRICS = ["latency_mean_s", "latency_p99_s", "sla_attainment", "sla_attainment_bound",
                "throughput_rps", "goodput_rps", "gpu_util_mean_pct", "gpu_busy_fraction",
                "swap_fraction", "swaps", "requests_unserved",
                "requests_shed"]  # metrics in the page's tables (CSVs: all)

# How the page's intervals and ratios read, shown after the metric definitions.
_READING_NOTES = {
    "mean [low, high]": "A cell's mean over its repeats and its Student t confidence interval at "
                        "CONFIDENCE; no interval for a cell with one repeat.",
    "ratio_noncc_over_cc": "For a CC pair (two cells that differ only in cc_mode): the non-CC "
                           "cell mean over the CC cell mean, with Fieller's interval (t at the "
                           "Welch-Satterthwaite degrees of freedom); none with one run per "
                           "side. Below 1 for a latency, above 1 for a throughput or SLA "
                           "attainment: CC does worse.",
    "relative_error": "Simulated versus measured: (simulated mean - measured mean) / measured "
                      "mean of cells run both ways with the same cc_mode.",
}

# Every figure this script may write (a figure it did not draw this time is removed from OUT).
_FIGURE_FILES = ("cc_comparison.png", "latency_cdf.png", "sla_attainment.png",
                 "throughput_goodput.png", "gpu_utilisation.png", "timeline.png",
                 "arrival_pattern.png", "sim_vs_real.png")


def choose_timeline_run(records: Sequence[runsummary.RunRecord],
                        wanted: str) -> runsummary.RunRecord:
    """The run named by ``wanted`` (run id or directory), else a representative one: a complete,
    preferably measured run whose SLA attainment is nearest the median of its kind."""
    if wanted:
        named = [r for r in records if wanted in (r.run_id, str(r.path), r.path.name)]
        named = named or [r for r in records if Path(wanted).resolve() == r.path]
        if named:
            return named[0]
        print(f"process_results: no run {wanted!r}; using a representative one", file=sys.stderr)
    pool = [r for r in records if r.row["status"] == "complete"] or list(records)
    pool = [r for r in pool if r.row["engine"] == "hf"] or pool
    attainment = np.array([r.row["sla_attainment"] if r.row["sla_attainment"] is not None
                           else np.nan for r in pool], dtype=float)
    if not np.isfinite(attainment).any():
        return pool[0]
    distance = np.abs(attainment - np.nanmedian(attainment))
    return pool[int(np.nanargmin(distance))]


def latency_curves(records: Sequence[runsummary.RunRecord], groups: Sequence[str]
                   ) -> dict[tuple[float, float, str, str, str], tuple[np.ndarray, int]]:
    """Completed latencies and issued-request counts of the complete runs of each cell, pooled
    over its repeats: per (SLA, rate, pattern, strategy, group); ``groups`` gives each record's
    run group. Runs of different SLAs are never pooled."""
    pooled: dict[tuple[float, float, str, str, str], list[runsummary.RunRecord]] = {}
    for record, group in zip(records, groups, strict=True):
        row = record.row
        if row["status"] != "complete":
            continue
        rate = row["mean_rps"] if math.isfinite(row["mean_rps"]) else math.inf  # NaN != NaN
        sla = row["sla_s"] if math.isfinite(row["sla_s"]) else math.inf
        pooled.setdefault((sla, rate, row["pattern"], row["strategy"], group), []).append(record)
    return {key: (np.concatenate([r.latencies_s for r in group]),
                  sum(int(r.row["requests_issued"]) for r in group))
            for key, group in pooled.items()}


def cc_pairs_text(runs: pd.DataFrame, cc: pd.DataFrame) -> str:
    """One sentence per paired platform: what was compared, and whether it was simulated."""
    sentences = []
    for (engine, platform), _ in cc.groupby(["engine", "platform"], sort=True):
        mine = runs[(runs["engine"] == engine) & (runs["platform"] == platform)]
        sources = {mode: ", ".join(sorted(mine.loc[mine["cc_mode"] == mode, "profiles_name"
                                                   if engine == "sim" else "results_dir"]
                                          .dropna().astype(str).unique()))
                   for mode in ("off", "on")}
        cells = cc[(cc["engine"] == engine) & (cc["platform"] == platform)]
        count = len(cells.drop_duplicates(list(tables.CC_PAIR_KEY)))
        cells_text = f"{count} cell{'s' if count != 1 else ''}"
        if engine == "sim":
            sentences.append(f"SIMULATED, not measured: {cells_text} replayed from profile set "
                             f"{sources['off']} (CC off) and {sources['on']} (CC on).")
        else:
            sentences.append(f"Measured on {platform}: {cells_text}, CC off from "
                             f"{sources['off']}, CC on from {sources['on']}.")
    return " ".join(sentences)


def draw_figures(records: Sequence[runsummary.RunRecord], runs: pd.DataFrame, cells: pd.DataFrame,
                 timeline: runsummary.RunRecord, out: Path, confidence: float,
                 warnings: list[str], pool: FigurePool) -> list[report.FigureItem]:
    """The figures of the grid and of one run, as PNG files in ``out`` (drawn by ``pool``)."""
    figures = [
        report.FigureItem("Latency CDF per strategy",
                          pool.draw(plots.plot_latency_cdf,
                                    latency_curves(records, runs["group"]),
                                    path=out / "latency_cdf.png"),
                          "Share of all issued requests completed within a latency (arrival "
                          "to end of batch), a panel per SLA, rate and pattern: runs of "
                          "different SLAs are never pooled, the repeats of a cell are. A curve "
                          "that stops below 100% left requests unserved, rejected, shed, failed "
                          "or lost. Dotted line: the panel's SLA. Failed runs are left out."),
        report.FigureItem("SLA attainment by strategy, pattern and rate",
                          pool.draw(plots.plot_sla_attainment, cells,
                                    path=out / "sla_attainment.png"),
                          "SLA-met requests / all issued requests, mean over repeats with its "
                          f"{confidence:.0%} confidence interval (none with one repeat); a row "
                          "of panels per run group and SLA. Black ticks: the bound on SLA "
                          "attainment that no strategy could beat on the same arrivals (no "
                          "swaps, each request at its model's best per-request time)."),
        report.FigureItem("Throughput and goodput",
                          pool.draw(plots.plot_throughput, cells,
                                    path=out / "throughput_goodput.png"),
                          "Completed (pale bar) and SLA-met (solid bar) requests per second over "
                          "the traffic window (what completed in the drain after it is not "
                          "counted); dashed line: the offered mean rate. A throughput below the "
                          "offered rate means the queues grew."),
        report.FigureItem("GPU utilisation and busy fraction",
                          pool.draw(plots.plot_utilisation, cells,
                                    path=out / "gpu_utilisation.png"),
                          "Share of the traffic window in inference (solid) and in model swaps "
                          "(hatched, stacked), from batches.csv; diamonds: mean NVML "
                          "utilisation in the window, where a GPU was sampled (monitor.csv)."),
    ]
    return figures + timeline_figures(timeline, runs, out, warnings, pool)


def timeline_figures(record: runsummary.RunRecord, runs: pd.DataFrame, out: Path,
                     warnings: list[str], pool: FigurePool) -> list[report.FigureItem]:
    """The timeline and arrival figures of one run (its CSVs are read again, only for it)."""
    row = record.row
    group = runs.loc[runs["run_dir"] == row["run_dir"], "group"].iloc[0]
    name = f"{row['run_id']} ({group})"
    try:
        requests, batches = rundirs.read_requests(record.path), rundirs.read_batches(record.path)
    except rundirs.RunDirError as exc:
        warnings.append(f"{exc}; no timeline figure")
        return []
    try:
        schedule = rundirs.read_schedule(record.path)
    except rundirs.RunDirError as exc:
        warnings.append(f"{exc}; arrivals taken from requests.csv")
        schedule = None
    arrivals_s = (schedule["scheduled_s"] if schedule is not None else requests["arrival_s"])
    if row["run_time_s"] is None:
        warnings.append(f"{record.path / 'run.json'}: no run time and no event; no timeline")
        return []
    run_time_s = float(row["run_time_s"])
    return [
        report.FigureItem(f"Timeline of {row['run_id']}",
                          pool.draw(run_plots.plot_timeline, requests, batches, run_time_s,
                                    path=out / "timeline.png", title=f"Timeline: {name}"),
                          "Top: the model on the GPU over time (solid: inference, pale: resident "
                          "and idle, hatched: swap into that model; triangles: swap starts). "
                          "Bottom: queued requests per model, from arrival_s and dispatch_s "
                          "(unserved requests stay queued to the end). Choose the run with "
                          "--timeline-run."),
        report.FigureItem(f"Arrival pattern of {row['run_id']}",
                          pool.draw(run_plots.plot_arrivals, arrivals_s.to_numpy(float),
                                    run_time_s, float(row["mean_rps"]),
                                    path=out / "arrival_pattern.png",
                                    title=f"Arrivals: {name}, pattern {row['pattern']}"),
                          "Requests arriving in each second of the run "
                          f"({'schedule.csv' if schedule is not None else 'requests.csv'}), "
                          "a 30 s moving average and the configured mean rate."),
    ]


def cc_section(runs: pd.DataFrame, cc: pd.DataFrame, out: Path, page_metrics: Sequence[str],
               pool: FigurePool) -> list[report.FigureItem | report.TableItem]:
    """The CC comparison for the page: its figure, the medians over cells, the cell table."""
    if cc.empty:
        return []
    figure = report.FigureItem(
        "CC comparison (non-CC / CC)",
        pool.draw(plots.plot_cc_comparison, cc, path=out / "cc_comparison.png",
                  subtitle=cc_pairs_text(runs, cc)),
        "Ratio non-CC / CC for runs that differ only in cc_mode (simulated and measured runs "
        "are never paired), computed repeat by repeat. Red: CC does worse (a latency ratio below "
        "1, a throughput or SLA-attainment ratio above 1); blue: CC does better; grey: "
        "undefined (0 / 0). Intervals: the table below and cc_comparison.csv.")
    shown = report.with_pairs(cc[cc["metric"].isin(page_metrics)])
    defined = set(shown.loc[shown["ratio_noncc_over_cc"].notna(), "metric"])
    order = [m for m in page_metrics if m in defined]  # leave out e.g. NVML for simulated runs
    medians = (shown.groupby(["pair", "strategy", "metric"])["ratio_noncc_over_cc"].median()
               .unstack("metric").reindex(columns=order).map(report.format_number)
               .rename_axis(columns=None).reset_index())
    cell_key = ["pair", "strategy", "pattern", "mean_rps", "sla_s", "max_new_tokens",
                "duration_s", "cc_pair_id"]
    text = report.with_intervals(shown, [*cell_key, "runs_noncc", "runs_cc", "metric"],
                                 ["ratio"], mean="ratio_noncc_over_cc", low="ratio_ci_low",
                                 high="ratio_ci_high", no_interval=shown["interval"])
    wide = (text.pivot(index=[*cell_key, "runs_noncc", "runs_cc"], columns="metric",
                       values="ratio").reindex(columns=order).rename_axis(columns=None)
            .reset_index())
    return [
        figure,
        report.TableItem("CC comparison at a glance", medians,
                         "Median over the paired cells of each strategy of the non-CC / CC "
                         "ratio. Below 1 for a latency, above 1 for a throughput or SLA "
                         "attainment: CC does worse."),
        report.TableItem("CC comparison by cell (non-CC / CC)", wide,
                         "Non-CC over CC, the geometric mean of the per-repeat ratios (the two "
                         "sides of a repeat share their arrivals) [its interval from the paired "
                         "log-ratios, Student t over repeats; with one repeat per side no "
                         "interval can be given, and the cell says so]. All metrics, with both "
                         "means: cc_comparison.csv.")]


def sim_vs_real_section(sim_real: pd.DataFrame, out: Path,
                        pool: FigurePool) -> list[report.FigureItem | report.TableItem]:
    """Where the simulator and the server differ, and why: the figure and its table."""
    decomposition = tables.decomposition_table(sim_real)
    if decomposition.empty:
        return []
    shown = decomposition.copy()
    numbers = [c for c in shown.columns if shown[c].dtype.kind == "f" and c not in (
        "mean_rps", "sla_s", "max_new_tokens", "duration_s")]
    for column in numbers:
        shown[column] = shown[column].map(report.format_number)
    return [
        report.FigureItem(
            "Simulated vs measured: where the error comes from",
            pool.draw(plots.plot_sim_vs_real, decomposition, path=out / "sim_vs_real.png"),
            "Cells run both ways on the same arrivals and profile. Left: the simulated minus "
            "the measured mean latency (diamond) and its parts, queue wait, swap wait and "
            "processing. Middle: the measured run's batches and swaps against the profile the "
            "simulator replays (1: as profiled). Right: the server's own time per batch, from "
            "the event that made a batch due to its dispatch, which no profile covers. This is "
            "how to tell whether to trust a profile."),
        report.TableItem(
            "Simulated vs measured, decomposed", shown,
            "SLA attainment both ways and their difference in points; mean latency both ways "
            "and the relative error; its parts (simulated - measured, s); the mean swap both "
            "ways; the measured run against its profile. All metrics: sim_vs_real.csv.")]


def page_tables(runs: pd.DataFrame, cells: pd.DataFrame, sim_real: pd.DataFrame,
                confidence: float, page_metrics: Sequence[str]) -> list[report.TableItem]:
    """The condensed tables of the page (the CSVs next to it hold every metric)."""
    cell_key = ["group", *[k for k in tables.CELL_KEY if k not in ("engine", "platform",
                                                                     "cc_mode")],
                "runs", "runs_failed"]
    why = ["one run: no interval" if n == 1 else "no complete run" if n == 0 else ""
           for n in cells["runs"]]
    items = [report.TableItem(
        "Grid cells", report.with_intervals(cells, cell_key, page_metrics, no_interval=why),
        f"Mean over the complete runs of each cell [{confidence:.0%} Student t interval over "
        "its repeats]. A cell is the runs whose parameters agree but for the seed (cell_id "
        "hashes them); failed runs are left out of the means and counted in runs_failed. "
        "sla_attainment and the fractions are from 0 to 1. All metrics: summary_cells.csv.")]
    failed = runs[runs["status"] != "complete"]
    if not failed.empty:
        items.append(report.TableItem(
            "Failed runs (left out of every mean)",
            failed[[c for c in ("run_id", "status", "failure", "group", "results_dir")
                    if c in failed]],
            "Runs that did not complete: their files are summarised in the Runs table, but no "
            "cell mean, CC ratio or simulated-vs-measured figure uses them."))
    if not sim_real.empty:
        shown = sim_real[sim_real["metric"].isin(page_metrics)].copy()
        for column in ("simulated_mean", "measured_mean", "relative_error"):
            shown[column] = shown[column].map(report.format_number)
        items.append(report.TableItem(
            "Simulated vs measured", shown,
            "Cells run both ways: means side by side; relative_error = (simulated - measured) / "
            "measured. All metrics: sim_vs_real.csv."))
    run_columns = ["run_id", "status", "group", "strategy", "pattern", "mean_rps", "sla_s",
                   "repeat", "results_dir", "requests_issued", "requests_ok",
                   "requests_unserved", "sla_attainment", "latency_p99_s", "throughput_rps"]
    shown = runs[[c for c in run_columns if c in runs]].copy()
    for column in ("sla_attainment", "latency_p99_s", "throughput_rps"):
        shown[column] = pd.to_numeric(shown[column], errors="coerce").map(report.format_number)
    items.append(report.TableItem("Runs", shown, "One row per run directory; a failed run "
                                   "(status not complete) is processed as far as its files go "
                                   "and counted in runs_failed of its cell. All metrics: "
                                   "summary_runs.csv."))
    return items


def page_facts(roots: Sequence[Path], runs: pd.DataFrame, cells: pd.DataFrame,
               cc: pd.DataFrame, sim_real: pd.DataFrame,
               timeline: runsummary.RunRecord) -> list[str]:
    """The lines at the top of the page: what was read, what was paired, what is simulated."""
    engines = runs["engine"].value_counts().to_dict()
    facts = [f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from "
             f"{', '.join(str(r.resolve()) for r in roots)}.",
             f"{len(runs)} runs ({engines.get('hf', 0)} measured, {engines.get('sim', 0)} "
             f"simulated; {int((runs['status'] != 'complete').sum())} not complete) in "
             f"{len(cells)} grid cells; {len(cc) // len(metrics.METRIC_KEYS)} CC pairs; "
             f"{len(sim_real) // len(metrics.METRIC_KEYS)} simulated/measured pairs.",
             "Simulated runs replay the profiles in a discrete-event simulation; they are "
             "labelled 'simulated' everywhere and never paired with measured runs for the CC "
             "comparison."]
    if not cc.empty:
        facts.append("CC comparison: " + cc_pairs_text(runs, cc))
    else:
        modes = ", ".join(f"{mode} ({count} runs)" for mode, count
                          in runs["cc_mode"].value_counts().sort_index().items())
        facts.append("No CC comparison: no grid cell was run with CC both off and on (cc_mode: "
                     f"{modes}). Give the results folders of both environments together.")
    return facts + [f"Timeline figures: {timeline.row['run_id']} ({timeline.path}).",
                    "Tables as CSV next to this file: summary_runs.csv, summary_cells.csv, "
                    "cc_comparison.csv, sim_vs_real.csv."]


def main(argv: Sequence[str] | None = None) -> int:
    """Read the results folders, write the tables, figures and report into OUT."""
    args = parse_constants(globals(), argv, positional="RESULTS_DIRS")
    roots = [Path(d) for d in args.RESULTS_DIRS]
    out = Path(args.OUT) if args.OUT else roots[0] / "report"
    records, warnings = runsummary.summarise_runs(roots)
    if not records:
        warnings.append(f"no usable run directory under {', '.join(map(str, roots))}")
        print("\n".join(f"process_results: {w}" for w in warnings), file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    runs = pd.DataFrame([r.row for r in records])
    show_platform = bool(runs.groupby("engine")["platform"].nunique().gt(1).any())
    runs = report.with_groups(runs, show_platform)
    cells = report.with_groups(tables.cell_table(runs, metrics.METRIC_KEYS, args.CONFIDENCE),
                               show_platform)
    cc = tables.cc_comparison_table(runs, metrics.METRIC_KEYS, args.CONFIDENCE)
    sim_real = tables.sim_vs_real_table(runs, metrics.METRIC_KEYS)
    runs.to_csv(out / "summary_runs.csv", index=False)
    cells.to_csv(out / "summary_cells.csv", index=False)
    cc.to_csv(out / "cc_comparison.csv", index=False)
    sim_real.to_csv(out / "sim_vs_real.csv", index=False)
    timeline = choose_timeline_run(records, args.TIMELINE_RUN)
    with FigurePool() as pool:  # the figures are drawn while the page's tables are made
        items = [*cc_section(runs, cc, out, args.PAGE_METRICS, pool),
                 *draw_figures(records, runs, cells, timeline, out, args.CONFIDENCE, warnings,
                               pool),
                 *sim_vs_real_section(sim_real, out, pool),
                 *page_tables(runs, cells, sim_real, args.CONFIDENCE, args.PAGE_METRICS)]
        pool.wait()
    drawn = {item.png.name for item in items if isinstance(item, report.FigureItem)}
    for stale in set(_FIGURE_FILES) - drawn:  # left by an earlier run into the same folder
        (out / stale).unlink(missing_ok=True)
    page = report.render_html("SINCERE results",
                              page_facts(roots, runs, cells, cc, sim_real, timeline), warnings,
                              items, {**metrics.METRIC_DESCRIPTIONS, **_READING_NOTES})
    (out / "report.html").write_text(page, encoding="utf-8")
    print("".join(f"warning: {w}\n" for w in warnings), end="", file=sys.stderr)
    print(f"process_results: {len(runs)} runs -> {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
