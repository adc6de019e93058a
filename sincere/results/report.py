"""The self-contained report.html of `process_results.py`, and how runs and numbers are labelled.

The page embeds every figure (`sincere.results.plots`, `sincere.results.run_plots`) as a base64 data
URI and uses no script and no external resource, so it opens offline from wherever it is copied.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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
                   mean: str = "{}_mean", low: str = "{}_ci_low", high: str = "{}_ci_high",
                   no_interval: Sequence[str] | None = None) -> pd.DataFrame:
    """``mean [low, high]`` text columns for the page (the CSVs keep the numbers); where a row
    has no interval, ``no_interval`` (one text per row) says why, rather than a blank."""
    shown = table[list(key)].copy()
    reasons = list(no_interval) if no_interval is not None else [""] * len(table)
    for metric in metrics:
        shown[metric] = [
            format_number(m) + (f" [{format_number(lo)}, {format_number(hi)}]"
                                if np.isfinite(lo) and np.isfinite(hi)
                                else f" ({why})" if why and np.isfinite(m) else "")
            for m, lo, hi, why in zip(table[mean.format(metric)].to_numpy(float),
                                      table[low.format(metric)].to_numpy(float),
                                      table[high.format(metric)].to_numpy(float), reasons,
                                      strict=True)]
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
