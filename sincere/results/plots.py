"""Figures of a grid of runs (matplotlib, PNG) for `process_results.py`.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas (no pyplot state, no
display needed).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sincere.results.report import format_number, with_pairs

DPI = 90


def colors_for(names: Sequence[str]) -> dict[str, tuple]:
    palette = colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def save_figure(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def legend_line(color: str | tuple, style: str, label: str, marker: str = "") -> Line2D:
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
# Where a panel's title sits: on top of its axes. Left to find its place, a title has
# matplotlib measure every panel's ticks again at each draw to see whether they reach above the
# axes, which none do here (no axis has ticks on top): about a tenth of a large figure's time.
TITLE_Y = 1.0
RATE_AXIS = "mean arrival rate (requests/s)"


# --- grid figures --------------------------------------------------------------------------------

def plot_latency_cdf(curves: Mapping[tuple[float, float, str, str, str], tuple[np.ndarray, int]],
                     path: Path) -> Path:
    """Latency CDFs as small multiples: a row of panels per (SLA, rate), a column per pattern,
    a line per strategy (colour) and run group (line style); runs of different SLAs are never
    pooled, each panel marks its own SLA.

    ``curves`` maps (SLA, mean rate, pattern, strategy, group) to the completed latencies pooled
    over a cell's repeats and the number of requests they issued: a curve tops out at the share
    that completed, so unserved, rejected, shed and failed requests stay visible.
    """
    rows = sorted({(k[0], k[1]) for k in curves}, key=lambda row: (_order(row[0]), _order(row[1])))
    patterns = sorted({k[2] for k in curves})
    strategies = sorted({k[3] for k in curves})
    groups = sorted({k[4] for k in curves})
    colors = colors_for(strategies)
    styles = {g: ["-", "--", ":", "-."][i % 4] for i, g in enumerate(groups)}
    fig = Figure(figsize=(max(4.6 * len(patterns) + 0.6, MIN_WIDTH_IN), 2.8 * len(rows) + 1.6),
                 layout="constrained")
    grid = fig.subplots(len(rows), len(patterns), squeeze=False, sharex=True, sharey=True)
    for (sla, rate, pattern, strategy, group), (latencies_s, issued) in sorted(curves.items()):
        ax = grid[rows.index((sla, rate))][patterns.index(pattern)]
        ordered = np.sort(latencies_s[latencies_s > 0])
        if issued == 0 or ordered.size == 0:
            continue
        picks = np.unique(np.linspace(0, ordered.size - 1, 600).astype(int))
        ax.plot(ordered[picks], (picks + 1) / issued * 100.0, color=colors[strategy],
                linestyle=styles[group], linewidth=1.3)
    # The panels share both axes, so the scale, ticks and limits set on one hold for all (set
    # on each, a log scale is set anew on every panel for every panel).
    grid[0][0].set_xscale("log")
    # Plain seconds at 1, 2, 5 of each decade (labelled minor ticks run together).
    grid[0][0].xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    grid[0][0].xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    grid[0][0].xaxis.set_minor_formatter(NullFormatter())
    grid[0][0].set_ylim(0, 101)
    for i, (sla, rate) in enumerate(rows):
        for j, pattern in enumerate(patterns):
            ax = grid[i][j]
            if math.isfinite(sla):
                ax.axvline(sla, color="0.3", linewidth=0.9, linestyle=":")
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(f"{_sla_label(sla)}: {pattern}, {_rate_label(rate)} requests/s",
                         fontsize=9, y=TITLE_Y)
        grid[i][0].set_ylabel("completed within\n(% of issued)", fontsize=9)
    for ax in grid[-1]:
        ax.set_xlabel("latency, arrival to completion (s, log scale)")
    handles = [legend_line(colors[s], "-", s) for s in strategies]
    if len(groups) > 1:
        handles += [legend_line("0.2", styles[g], g) for g in groups]
    handles.append(legend_line("0.3", ":", "the panel's SLA"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=8)
    fig.suptitle("Latency CDF per strategy, one panel per SLA, rate and pattern (repeats of a "
                 "cell pooled; share of all issued requests)", fontsize=11)
    return save_figure(fig, path)


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
                ax.set_title(f"pattern: {pattern}", fontsize=10, y=TITLE_Y)
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
    colors = colors_for(sorted(cells["strategy"].astype(str).unique()))
    fig, axes = _small_multiples(cells, "SLA attainment (%)")
    bounded = False
    for key, panel in _panel_cells(cells):
        ax = axes[key]
        for strategy, sub, x, width in _bar_slots(panel, list(colors)):
            ax.bar(x, sub["sla_attainment_mean"].to_numpy(float) * 100.0, width,
                   yerr=_errors(sub, "sla_attainment", 100.0), color=colors[strategy],
                   capsize=2, error_kw={"linewidth": 0.8})
            if "sla_attainment_bound_mean" in sub:
                bound = sub["sla_attainment_bound_mean"].to_numpy(float) * 100.0
                bounded |= bool(np.isfinite(bound).any())
                ax.hlines(bound, x - width / 2, x + width / 2, color="black", linewidth=1.4)
        _rate_ticks(ax, panel)
        ax.set_ylim(0, 105)
    _strategy_legend(fig, colors, [legend_line("black", "-", "bound no strategy can beat")]
                     if bounded else ())
    fig.suptitle("SLA attainment = SLA-met / all issued requests (bars: mean over repeats, "
                 "whiskers: confidence interval" + (", black: the bound" if bounded else "")
                 + ")", fontsize=11)
    return save_figure(fig, path)


def plot_throughput(cells: pd.DataFrame, path: Path) -> Path:
    """Throughput (pale bar) and goodput (solid bar inside it) per strategy, by rate, with the
    offered rate marked."""
    colors = colors_for(sorted(cells["strategy"].astype(str).unique()))
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
        legend_line("black", "--", "offered mean rate")])
    fig.suptitle("Throughput and goodput over the traffic window (mean over repeats, whiskers: "
                 "confidence interval)", fontsize=11)
    return save_figure(fig, path)


def plot_utilisation(cells: pd.DataFrame, path: Path) -> Path:
    """GPU busy fraction and swap fraction (stacked bars) and NVML utilisation (diamonds)."""
    colors = colors_for(sorted(cells["strategy"].astype(str).unique()))
    fig, axes = _small_multiples(cells, "% of traffic window")
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
        extra.append(legend_line("black", "none", "NVML GPU utilisation (%)", marker="D"))
    _strategy_legend(fig, colors, extra)
    fig.suptitle("GPU busy fraction (solid: inference) and swap fraction (hatched), from "
                 "batches.csv\n" + ("diamonds: mean NVML utilisation from monitor.csv" if measured
                                    else "no NVML samples in these runs (simulated or no GPU)"),
                 fontsize=11)
    return save_figure(fig, path)


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
        ax.set_title(f"{metric} ({better} is better)", fontsize=9, y=TITLE_Y)
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
    return save_figure(fig, path)


def plot_sim_vs_real(decomposition: pd.DataFrame, path: Path) -> Path:
    """Where the simulator and the server differ, cell by cell: the mean-latency error split
    into queue wait, swap wait and processing (simulated − measured), and what the measured run
    says of its profile (batches and swaps against it, the server's own time per batch)."""
    columns = [c for c in ("strategy", "pattern", "mean_rps", "sla_s") if c in decomposition]
    keys = _keys(decomposition, columns)
    labels = _varying_label(keys, ["{}", "{}", "{:g} rps", "SLA {:g} s"][:len(columns)])
    y = np.arange(len(labels))
    fig = Figure(figsize=(max(MIN_WIDTH_IN, 14), 0.42 * len(labels) + 2.4), layout="constrained")
    ax_error, ax_fit, ax_server = fig.subplots(1, 3, sharey=True, width_ratios=[3, 2, 1.3])
    parts = [("queue_wait_mean_error_s", "queue wait", "tab:blue"),
             ("swap_wait_mean_error_s", "swap wait", "tab:orange"),
             ("processing_mean_error_s", "processing", "tab:green")]
    positive, negative = np.zeros(len(y)), np.zeros(len(y))
    for column, label, color in parts:
        values = np.nan_to_num(decomposition[column].to_numpy(float))
        base = np.where(values >= 0, positive, negative)
        ax_error.barh(y, values, left=base, color=color, label=label, height=0.6)
        positive += np.clip(values, 0, None)
        negative += np.clip(values, None, 0)
    total = (decomposition["latency_mean_simulated_s"]
             - decomposition["latency_mean_measured_s"]).to_numpy(float)
    ax_error.plot(total, y, linestyle="none", marker="D", color="black", markersize=4,
                  label="mean latency")
    ax_error.axvline(0, color="0.3", linewidth=0.8)
    ax_error.set_xlabel("simulated − measured (s)")
    ax_error.set_yticks(y, labels, fontsize=8)
    ax_error.legend(fontsize=8, loc="lower right")
    ax_error.set_title("mean latency error and its parts", fontsize=9, y=TITLE_Y)
    for offset, (column, label, color) in zip(
            (-0.17, 0.17), [("measured_processing_vs_profile", "batch / profiled", "tab:green"),
                            ("measured_swap_vs_profile", "swap / profiled", "tab:orange")],
            strict=True):
        ax_fit.barh(y + offset, decomposition[column].to_numpy(float) - 1.0, left=1.0,
                    height=0.32, color=color, label=label)
    ax_fit.axvline(1.0, color="0.3", linewidth=0.8)
    ax_fit.set_xlabel("measured / profiled (1: as profiled)")
    ax_fit.legend(fontsize=8, loc="lower right")
    ax_fit.set_title("the measured run against its profile", fontsize=9, y=TITLE_Y)
    ax_server.barh(y, decomposition["measured_server_time_per_batch_s"].to_numpy(float) * 1e3,
                   color="0.45", height=0.6)
    ax_server.set_xlabel("ms per batch")
    ax_server.set_title("server's own time", fontsize=9, y=TITLE_Y)
    for ax in (ax_error, ax_fit, ax_server):
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Simulated versus measured, cell by cell: where the error comes from",
                 fontsize=11)
    return save_figure(fig, path)
