"""Figures (matplotlib, PNG) and the self-contained report.html of `process_results.py`.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas (no pyplot state, no
display needed). The report embeds every figure as a base64 data URI and uses no script and no
external resource, so it opens offline from wherever it is copied.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from sincere.metrics import swapped_batches

DPI = 90
ENGINE_NAMES = {"sim": "simulated", "hf": "measured", "external": "client-side"}


def group_label(engine: str, cc_mode: str, platform: str | None = None) -> str:
    """``simulated, CC off`` / ``measured (NVIDIA H100), CC on``: how runs are told apart in
    every figure; simulated runs are always marked as such."""
    name = ENGINE_NAMES.get(engine, engine)
    return f"{name} ({platform}), CC {cc_mode}" if platform else f"{name}, CC {cc_mode}"


def with_groups(frame: pd.DataFrame, show_platform: bool) -> pd.DataFrame:
    """``frame`` with a ``group`` column from its engine, cc_mode (and platform) columns."""
    labels = [group_label(e, c, p if show_platform else None) for e, c, p in
              frame[["engine", "cc_mode", "platform"]].itertuples(index=False)]
    return frame.assign(group=labels)


def with_pairs(cc_table: pd.DataFrame) -> pd.DataFrame:
    """``cc_table`` with a ``pair`` column naming what was compared: ``simulated (h100-orig)``."""
    labels = [f"{ENGINE_NAMES.get(e, e)} ({p})" for e, p in
              cc_table[["engine", "platform"]].itertuples(index=False)]
    return cc_table.assign(pair=labels)


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _line(color: str | tuple, style: str, label: str, marker: str = "") -> Line2D:
    """A legend entry for a line (or, with ``marker`` and style ``none``, a marker)."""
    return Line2D([], [], color=color, linestyle=style, marker=marker, label=label)


def _rate_label(rate: float) -> str:
    return f"{rate:g}" if math.isfinite(rate) else "?"


def _sla_label(sla_s: float) -> str:
    return f"SLA {sla_s:g} s" if math.isfinite(sla_s) else "SLA ?"


def _order(value: float) -> float:
    """A sort key that puts an unrecorded (NaN) parameter last."""
    return value if math.isfinite(value) else math.inf


# The narrowest a figure is drawn (inches), so that its title and legend fit.
MIN_WIDTH_IN = 11.0
RATE_AXIS = "mean arrival rate (requests/s)"


# --- grid figures --------------------------------------------------------------------------------

def plot_latency_cdf(curves: Mapping[tuple[float, str, str, str], tuple[np.ndarray, int]],
                     sla_values_s: Sequence[float], path: Path) -> Path:
    """Latency CDFs: a panel per (rate, pattern), a line per strategy (colour) and run group
    (line style).

    ``curves`` maps (mean rate, pattern, strategy, group) to the completed latencies pooled over
    those runs and the number of requests they issued: a curve tops out at the share that
    completed, so unserved, rejected and failed requests stay visible.
    """
    rates = list(dict.fromkeys(_rate_label(r) for r in sorted((k[0] for k in curves),
                                                               key=_order)))
    patterns = sorted({k[1] for k in curves})
    strategies = sorted({k[2] for k in curves})
    groups = sorted({k[3] for k in curves})
    colors = _colors(strategies)
    styles = {g: ["-", "--", ":", "-."][i % 4] for i, g in enumerate(groups)}
    fig = Figure(figsize=(max(4.6 * len(patterns) + 0.6, MIN_WIDTH_IN), 3.0 * len(rates) + 1.6),
                 layout="constrained")
    grid = fig.subplots(len(rates), len(patterns), squeeze=False, sharex=True, sharey=True)
    for (rate, pattern, strategy, group), (latencies_s, issued) in sorted(curves.items()):
        ax = grid[rates.index(_rate_label(rate))][patterns.index(pattern)]
        ordered = np.sort(latencies_s[latencies_s > 0])
        if issued == 0 or ordered.size == 0:
            continue
        picks = np.unique(np.linspace(0, ordered.size - 1, 600).astype(int))
        ax.plot(ordered[picks], (picks + 1) / issued * 100.0, color=colors[strategy],
                linestyle=styles[group], linewidth=1.3)
    for i, rate in enumerate(rates):
        for j, pattern in enumerate(patterns):
            ax = grid[i][j]
            for sla_s in sla_values_s:
                ax.axvline(sla_s, color="0.5", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            # Plain seconds at 1, 2, 5 of each decade (labelled minor ticks run together).
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(0, 101)
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(f"{pattern}, {rate} requests/s", fontsize=9)
        grid[i][0].set_ylabel("completed within (% of issued)")
    for ax in grid[-1]:
        ax.set_xlabel("latency, arrival to completion (s, log scale)")
    handles = [_line(colors[s], "-", s) for s in strategies]
    if len(groups) > 1:
        handles += [_line("0.2", styles[g], g) for g in groups]
    handles.append(_line("0.5", ":", "SLA: " + ", ".join(f"{s:g}" for s in sla_values_s) + " s"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=8)
    fig.suptitle("Latency CDF per strategy (SLAs and repeats pooled; share of all issued "
                 "requests)", fontsize=11)
    return _save(fig, path)


def _small_multiples(cells: pd.DataFrame, ylabel: str, xlabel: str = RATE_AXIS):
    """A labelled figure with a row per (run group, SLA) and a column per pattern, and its axes
    by ((group, sla), pattern)."""
    rows = sorted(set(cells[["group", "sla_s"]].itertuples(index=False, name=None)),
                  key=lambda row: (row[0], _order(row[1])))
    rows = list(dict.fromkeys((group, _sla_label(sla_s)) for group, sla_s in rows))
    patterns = sorted(cells["pattern"].astype(str).unique())
    fig = Figure(figsize=(max(4.2 * len(patterns) + 1.2, MIN_WIDTH_IN), 2.4 * len(rows) + 1.4),
                 layout="constrained")
    grid = fig.subplots(len(rows), len(patterns), squeeze=False, sharey=True)
    axes = {}
    for i, (group, sla) in enumerate(rows):
        for j, pattern in enumerate(patterns):
            ax = axes[((group, sla), pattern)] = grid[i][j]
            ax.grid(True, axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(f"pattern: {pattern}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel(xlabel)
        grid[i][0].set_ylabel(f"{group}, {sla}\n{ylabel}", fontsize=9)
    return fig, axes


def _panel_cells(cells: pd.DataFrame):
    """(axes key, that panel's cells) for every panel of `_small_multiples`."""
    for (group, sla_s, pattern), panel in cells.groupby(["group", "sla_s", "pattern"],
                                                        sort=True, dropna=False):
        yield ((group, _sla_label(sla_s)), str(pattern)), panel


def _errors(panel: pd.DataFrame, metric: str, scale: float = 1.0) -> np.ndarray | None:
    """Error bar lengths (below, above) of a metric's interval; None where no cell has one."""
    mean = panel[f"{metric}_mean"].to_numpy(float)
    low = mean - panel[f"{metric}_ci_low"].to_numpy(float)
    high = panel[f"{metric}_ci_high"].to_numpy(float) - mean
    if not np.isfinite(low).any():
        return None
    return np.nan_to_num(np.vstack([low, high])) * scale


def _bar_slots(panel: pd.DataFrame, strategies: Sequence[str]):
    """(strategy, its cells by rate, bar x positions, bar width) for grouped bars by rate."""
    rates = sorted(panel["mean_rps"].unique(), key=_order)
    width = 0.8 / max(1, len(strategies))
    for i, strategy in enumerate(strategies):
        sub = panel[panel["strategy"] == strategy].set_index("mean_rps").reindex(rates)
        yield strategy, sub, np.arange(len(rates)) - 0.4 + width * (i + 0.5), width


def _rate_ticks(ax, panel: pd.DataFrame) -> None:
    rates = sorted(panel["mean_rps"].unique(), key=_order)
    ax.set_xticks(np.arange(len(rates)), [_rate_label(r) for r in rates])


def _strategy_legend(fig: Figure, colors: Mapping[str, tuple], extra: Sequence = ()) -> None:
    handles = [Patch(color=color, label=name) for name, color in colors.items()]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=9)


def plot_sla_attainment(cells: pd.DataFrame, path: Path) -> Path:
    """SLA attainment (%) by strategy x pattern x rate, a row of panels per SLA and run group."""
    colors = _colors(sorted(cells["strategy"].astype(str).unique()))
    fig, axes = _small_multiples(cells, "SLA attainment (%)")
    for key, panel in _panel_cells(cells):
        ax = axes[key]
        for strategy, sub, x, width in _bar_slots(panel, list(colors)):
            ax.bar(x, sub["sla_attainment_mean"].to_numpy(float) * 100.0, width,
                   yerr=_errors(sub, "sla_attainment", 100.0), color=colors[strategy],
                   capsize=2, error_kw={"linewidth": 0.8})
        _rate_ticks(ax, panel)
        ax.set_ylim(0, 105)
    _strategy_legend(fig, colors)
    fig.suptitle("SLA attainment = SLA-met / all issued requests (bars: mean over repeats, "
                 "whiskers: confidence interval)", fontsize=11)
    return _save(fig, path)


def plot_throughput(cells: pd.DataFrame, path: Path) -> Path:
    """Throughput (pale bar) and goodput (solid bar inside it) per strategy, by rate, with the
    offered rate marked."""
    colors = _colors(sorted(cells["strategy"].astype(str).unique()))
    fig, axes = _small_multiples(cells, "requests/s")
    for key, panel in _panel_cells(cells):
        ax = axes[key]
        for strategy, sub, x, width in _bar_slots(panel, list(colors)):
            ax.bar(x, sub["throughput_rps_mean"].to_numpy(float), width, color=colors[strategy],
                   alpha=0.35, yerr=_errors(sub, "throughput_rps"), capsize=2,
                   error_kw={"linewidth": 0.8})
            ax.bar(x, sub["goodput_rps_mean"].to_numpy(float), width * 0.6,
                   color=colors[strategy], yerr=_errors(sub, "goodput_rps"), capsize=2,
                   error_kw={"linewidth": 0.8})
        rates = np.array(sorted(panel["mean_rps"].unique(), key=_order), dtype=float)
        ax.hlines(rates, np.arange(rates.size) - 0.45, np.arange(rates.size) + 0.45,
                  color="black", linestyle="--", linewidth=1.0)
        _rate_ticks(ax, panel)
    _strategy_legend(fig, colors, [
        Patch(facecolor="0.4", alpha=0.35, label="throughput (completed/s)"),
        Patch(facecolor="0.4", label="goodput (SLA-met/s)"),
        _line("black", "--", "offered mean rate")])
    fig.suptitle("Throughput and goodput over the run time (mean over repeats, whiskers: "
                 "confidence interval)", fontsize=11)
    return _save(fig, path)


def plot_utilisation(cells: pd.DataFrame, path: Path) -> Path:
    """GPU busy fraction and swap fraction (stacked bars) and NVML utilisation (diamonds)."""
    colors = _colors(sorted(cells["strategy"].astype(str).unique()))
    fig, axes = _small_multiples(cells, "% of run time")
    measured = False
    for key, panel in _panel_cells(cells):
        ax = axes[key]
        for strategy, sub, x, width in _bar_slots(panel, list(colors)):
            busy = sub["gpu_busy_fraction_mean"].to_numpy(float) * 100.0
            swap = sub["swap_fraction_mean"].to_numpy(float) * 100.0
            ax.bar(x, busy, width, color=colors[strategy])
            ax.bar(x, swap, width, bottom=np.nan_to_num(busy), color=colors[strategy],
                   alpha=0.35, hatch="///", edgecolor="0.3", linewidth=0.0)
            nvml = sub["gpu_util_mean_pct_mean"].to_numpy(float)
            if np.isfinite(nvml).any():
                measured = True
                ax.plot(x, nvml, linestyle="none", marker="D", color="black", markersize=4)
        _rate_ticks(ax, panel)
        ax.set_ylim(0, 105)
    extra = [Patch(facecolor="white", edgecolor="0.3", hatch="///",
                   label="swapping (stacked on busy)")]
    if measured:
        extra.append(_line("black", "none", "NVML GPU utilisation (%)", marker="D"))
    _strategy_legend(fig, colors, extra)
    fig.suptitle("GPU busy fraction (solid: inference) and swap fraction (hatched), from "
                 "batches.csv\n" + ("diamonds: mean NVML utilisation from monitor.csv" if measured
                                    else "no NVML samples in these runs (simulated or no GPU)"),
                 fontsize=11)
    return _save(fig, path)


# Whether a higher value of a metric is better (for the colours of the CC comparison).
HIGHER_IS_BETTER = {"latency_mean_s": False, "latency_p50_s": False, "latency_p90_s": False,
                    "latency_p99_s": False, "sla_attainment": True, "throughput_rps": True,
                    "goodput_rps": True, "output_tokens_per_s": True, "swap_fraction": False,
                    "swap_time_s": False, "queue_wait_mean_s": False, "swap_wait_mean_s": False,
                    "processing_mean_s": False}
CC_FIGURE_METRICS = ("latency_p50_s", "latency_p99_s", "sla_attainment", "throughput_rps",
                     "goodput_rps", "swap_fraction")


def _keys(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple]:
    """Each row's values of ``columns`` as a tuple, an unrecorded (NaN) number as inf so that
    equal keys compare equal."""
    return [tuple(_order(v) if isinstance(v, float) else v for v in row)
            for row in frame[list(columns)].itertuples(index=False, name=None)]


def _varying_label(values: Sequence[tuple], names: Sequence[str]) -> list[str]:
    """A label per key tuple naming only the parts that vary (``names`` are format strings
    for numbers, ``{}`` for text; an unrecorded number reads ``?``)."""
    varying = [len({v[i] for v in values}) > 1 for i in range(len(names))]
    if not any(varying):
        varying[0] = True
    return [" | ".join(name.format(part) if not isinstance(part, float) or math.isfinite(part)
                       else name.replace("{:g}", "?") for name, part, shown
                       in zip(names, value, varying, strict=True) if shown)
            for value in values]


def plot_cc_comparison(cc_table: pd.DataFrame, path: Path, subtitle: str = "",
                       metrics: Sequence[str] = CC_FIGURE_METRICS) -> Path:
    """Heat maps of the non-CC / CC ratio of cell means: a map per metric, a row per (pair,
    strategy, pattern), a column per (rate, SLA); red where CC does worse, blue where better."""
    table = cc_table[cc_table["metric"].isin(metrics)]
    shown = [m for m in metrics if m in set(table["metric"])]
    table = with_pairs(table)
    row_columns = ["pair", "strategy", "pattern"]
    col_columns = ["mean_rps", "sla_s", "max_new_tokens", "duration_s"]
    row_keys = sorted(set(_keys(table, row_columns)))
    col_keys = sorted(set(_keys(table, col_columns)))
    row_labels = _varying_label(row_keys, ["{}", "{}", "{}"])
    col_labels = [label.replace(" | ", "\n") for label in _varying_label(
        col_keys, ["{:g} rps", "SLA {:g} s", "{:g} tokens", "{:g} s long"])]
    ncols = 2 if len(shown) > 1 else 1
    nrows = math.ceil(len(shown) / ncols)
    width_in = max(ncols * (0.5 * len(col_keys) + 1.5) + 3.0, MIN_WIDTH_IN)
    fig = Figure(figsize=(width_in,
                          nrows * (0.27 * len(row_keys) + 1.4) + 1.6), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = None
    for ax, metric in zip(grid.ravel(), shown, strict=False):
        sub = table[table["metric"] == metric]
        ratio = np.full((len(row_keys), len(col_keys)), np.nan)
        rows = [row_keys.index(k) for k in _keys(sub, row_columns)]
        cols = [col_keys.index(k) for k in _keys(sub, col_columns)]
        ratio[rows, cols] = sub["ratio_noncc_over_cc"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            worse = np.log2(ratio) * (1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0)
        image = ax.imshow(np.clip(worse, -2, 2), cmap=cmap, vmin=-2, vmax=2, aspect="auto")
        for (i, j), value in np.ndenumerate(ratio):
            ax.text(j, i, format_number(value), ha="center", va="center", fontsize=6.5,
                    color="white" if np.isfinite(worse[i, j]) and abs(worse[i, j]) > 1.3
                    else "black")
        better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=9)
        ax.set_xticks(range(len(col_keys)), col_labels, fontsize=7)
        ax.set_yticks(range(len(row_keys)), row_labels, fontsize=7)
    for ax in grid.ravel()[len(shown):]:
        ax.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=grid.ravel().tolist(), location="bottom", shrink=0.5,
                           aspect=40)
        bar.set_ticks([-2, -1, 0, 1, 2], labels=["CC 4x better", "2x better", "equal",
                                                 "2x worse", "CC 4x worse"])
    fig.suptitle("CC comparison: non-CC / CC ratio of cell means (number in each cell; colour: "
                 "how much worse CC does, log scale)"
                 + (f"\n{textwrap.fill(subtitle, int(width_in * 10))}" if subtitle else ""),
                 fontsize=11)
    return _save(fig, path)


# --- one run -------------------------------------------------------------------------------------

def _queue_steps(arrival_s: np.ndarray, dispatch_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, queue length after each) from arrivals (+1) and dispatches (-1)."""
    dispatched = dispatch_s[np.isfinite(dispatch_s)]
    times = np.concatenate([arrival_s, dispatched])
    steps = np.concatenate([np.ones(arrival_s.size), -np.ones(dispatched.size)])
    order = np.argsort(times, kind="stable")
    return times[order], np.cumsum(steps[order])


def _spans(begin_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
    """(start, width) rows for `broken_barh`."""
    return np.column_stack([begin_s, end_s - begin_s])


def plot_timeline(requests: pd.DataFrame, batches: pd.DataFrame, run_time_s: float,
                  path: Path, title: str) -> Path:
    """Which model was resident (swaps hatched, inference solid) and each model's queue length."""
    models = sorted(set(batches["model"].dropna().astype(str))
                    | set(requests["model"].dropna().astype(str)))
    colors = _colors(models)
    lane = {model: i for i, model in enumerate(models)}
    fig = Figure(figsize=(14, 2.2 + 0.5 * len(models) + 3.0), layout="constrained")
    ax_gpu, ax_queue = fig.subplots(2, 1, sharex=True, height_ratios=[0.6 * len(models) + 0.8, 3])
    ordered = batches.sort_values("start_s", kind="stable")
    model = ordered["model"].astype(str).to_numpy(object)
    start_s = ordered["start_s"].to_numpy(float)
    end_s = ordered["end_s"].to_numpy(float)
    swap_s = np.nan_to_num(ordered["swap_s"].to_numpy(float))
    swapped = swapped_batches(ordered)  # in start order: every change of resident model
    changes = np.flatnonzero(swapped)
    segment_end = np.r_[start_s[changes[1:]] - swap_s[changes[1:]], run_time_s][:changes.size]
    for m in models:
        y = lane[m] - 0.35
        mine = changes[model[changes] == m]
        ends = segment_end[np.isin(changes, mine)]
        ax_gpu.broken_barh(_spans(start_s[mine], ends), (y, 0.7), facecolors=colors[m],
                           alpha=0.18)
        busy = model == m
        ax_gpu.broken_barh(_spans(start_s[busy], end_s[busy]), (y, 0.7), facecolors=colors[m])
        loads = busy & swapped
        ax_gpu.broken_barh(_spans(start_s[loads] - swap_s[loads], start_s[loads]), (y, 0.7),
                           facecolors="white", edgecolors=colors[m], hatch="////")
    swap_times = start_s[swapped] - swap_s[swapped]
    ax_gpu.plot(swap_times, np.full(swap_times.size, len(models) - 0.35), linestyle="none",
                marker="v", color="black", markersize=4, label=f"swap ({swap_times.size})")
    ax_gpu.set_yticks(range(len(models)), models)
    ax_gpu.set_ylim(-0.6, len(models) - 0.1)
    ax_gpu.set_ylabel("model on GPU")
    ax_gpu.legend(handles=[Patch(facecolor="0.3", label="inference"),
                           Patch(facecolor="0.3", alpha=0.18, label="resident, idle"),
                           Patch(facecolor="white", edgecolor="0.3", hatch="////",
                                 label="swap (unload + load)"),
                           _line("black", "none", f"swap start ({swap_times.size})",
                                 marker="v")],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    status = requests["status"].fillna("").astype(str).to_numpy(object)
    queued = status != "rejected"
    dispatch = (requests["dispatch_s"].to_numpy(float) if "dispatch_s" in requests
                else np.full(len(requests), np.nan))
    for m in models:
        mine = queued & (requests["model"].astype(str).to_numpy(object) == m)
        times, length = _queue_steps(requests["arrival_s"].to_numpy(float)[mine], dispatch[mine])
        times, length = np.r_[0.0, times, run_time_s], np.r_[0.0, length, length[-1:] if
                                                            length.size else 0.0]
        ax_queue.step(times, length, where="post", color=colors[m], linewidth=1.0, label=m)
    ax_queue.set_ylabel("queued requests")
    ax_queue.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_queue.set_xlabel("time since run start (s)")
    ax_queue.set_xlim(0, run_time_s)
    ax_queue.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax_queue.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_arrivals(arrival_s: np.ndarray, run_time_s: float, mean_rps: float, path: Path,
                  title: str, window_s: int = 30) -> Path:
    """Arrivals per second over the run, with a moving average and the configured mean rate."""
    span_s = max(float(np.nanmax(arrival_s)) if arrival_s.size else 0.0, run_time_s, 1.0)
    edges = np.arange(0.0, math.ceil(span_s) + 1.0, 1.0)
    counts, _ = np.histogram(arrival_s[np.isfinite(arrival_s)], bins=edges)
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.stairs(counts, edges, color="0.55", linewidth=0.6, label="arrivals in each second")
    if counts.size >= window_s:
        moving = np.convolve(counts, np.ones(window_s) / window_s, mode="valid")
        ax.plot(edges[window_s // 2: window_s // 2 + moving.size] + 0.5, moving,
                color="tab:red", linewidth=1.5, label=f"{window_s} s moving average")
    if math.isfinite(mean_rps):
        ax.axhline(mean_rps, color="black", linestyle="--", linewidth=1.0,
                   label=f"configured mean rate ({mean_rps:g}/s)")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("arrivals per second")
    ax.set_xlim(0, edges[-1])
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=11)
    return _save(fig, path)


# --- tables for the page -------------------------------------------------------------------------

def format_number(value: float) -> str:
    """A short human reading of a metric value; a dash where undefined."""
    if value is None or not np.isfinite(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def with_intervals(table: pd.DataFrame, key: Sequence[str], metrics: Sequence[str],
                   mean: str = "{}_mean", low: str = "{}_ci_low",
                   high: str = "{}_ci_high") -> pd.DataFrame:
    """``mean [low, high]`` text columns for the page (the CSVs keep the numbers)."""
    shown = table[list(key)].copy()
    for metric in metrics:
        shown[metric] = [
            format_number(m) + (f" [{format_number(lo)}, {format_number(hi)}]"
                                if np.isfinite(lo) and np.isfinite(hi) else "")
            for m, lo, hi in zip(table[mean.format(metric)].to_numpy(float),
                                 table[low.format(metric)].to_numpy(float),
                                 table[high.format(metric)].to_numpy(float), strict=True)]
    return shown


# --- the page ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FigureItem:
    """A PNG on disk, embedded in the page with its title and caption."""

    title: str
    png: Path
    caption: str


@dataclass(frozen=True)
class TableItem:
    """A table shown in the page, with a note on how to read it."""

    title: str
    table: pd.DataFrame
    note: str


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em;
       max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
.scroll { overflow-x: auto; max-height: 40em; overflow-y: auto; }
.warn { color: #8a4b00; } dt { font-weight: bold; font-family: monospace; }
dd { margin-bottom: 0.4em; }
"""


def _embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _section(item: FigureItem | TableItem, anchor: str) -> str:
    """One figure (embedded PNG) or table of the page, under its heading."""
    esc = html.escape
    if isinstance(item, FigureItem):
        return (f"<h2 id='{anchor}'>{esc(item.title)}</h2><p>{esc(item.caption)}</p>"
                f"<img src='{_embed_png(item.png)}' alt='{esc(item.title)}'>")
    body = (item.table.to_html(index=False, na_rep="–", border=0, escape=True)
            if not item.table.empty else "<p><em>(none)</em></p>")
    return (f"<h2 id='{anchor}'>{esc(item.title)}</h2><p>{esc(item.note)}</p>"
            f"<div class='scroll'>{body}</div>")


def render_html(title: str, facts: Sequence[str], warnings: Sequence[str],
                items: Sequence[FigureItem | TableItem],
                descriptions: Mapping[str, str]) -> str:
    """The whole report as one HTML string: facts, warnings, contents, the figures and tables
    in the order given, the metric definitions. Figures inline as data URIs; no script, no
    external link."""
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             "<ul>" + "".join(f"<li>{esc(f)}</li>" for f in facts) + "</ul>"]
    if warnings:
        parts.append(f"<h2>Warnings ({len(warnings)})</h2><ul class='warn'>"
                     + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")
    parts.append("<h2>Contents</h2><ul>"
                 + "".join(f"<li><a href='#s{i}'>{esc(item.title)}</a></li>"
                           for i, item in enumerate(items))
                 + "<li><a href='#metrics'>What the metrics mean</a></li></ul>")
    parts += [_section(item, f"s{i}") for i, item in enumerate(items)]
    parts.append("<h2 id='metrics'>What the metrics mean</h2><dl>"
                 + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in descriptions.items())
                 + "</dl></body></html>")
    return "\n".join(parts)
