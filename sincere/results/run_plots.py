"""Figures of one run (matplotlib, PNG): which model was resident, queue lengths, arrivals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sincere.results.plots import TITLE_Y, colors_for, legend_line, save_figure
from sincere.runs.metrics import swapped_batches


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
    colors = colors_for(models)
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
                           legend_line("black", "none", f"swap start ({swap_times.size})",
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
    return save_figure(fig, path)


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
    ax.set_title(title, fontsize=11, y=TITLE_Y)
    return save_figure(fig, path)
