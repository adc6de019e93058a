"""The report's figures drawn side by side, in worker processes.

Each figure (`sincere.results.plots`, `sincere.results.run_plots`) is a function of plain data
that writes one PNG, and matplotlib draws a figure on one core: a grid's seven figures drawn in
turn were most of `process_results.py`'s time. `FigurePool` starts each one in a worker process
and hands back its path at once, so the page is put together meanwhile and waits only before it
embeds them. What the figures show is the plotting modules' business, not this one's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any


class FigurePool:
    """Draws figures in up to ``workers`` processes (default: one per core, at most
    ``MAX_WORKERS``); with one worker, each figure is drawn at once in this process."""

    MAX_WORKERS = 8

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else min(os.cpu_count() or 1,
                                                               self.MAX_WORKERS)
        self._pool = ProcessPoolExecutor(self.workers) if self.workers > 1 else None
        self._started: list[Future[Path]] = []

    def draw(self, plot: Callable[..., Path], *args: Any, path: Path, **kwargs: Any) -> Path:
        """Start ``plot(*args, path=path, **kwargs)``; ``path`` is written once `wait` returns."""
        if self._pool is None:
            return plot(*args, path=path, **kwargs)
        self._started.append(self._pool.submit(plot, *args, path=path, **kwargs))
        return path

    def wait(self) -> None:
        """Return when every figure started is written; a figure that failed raises here."""
        started, self._started = self._started, []
        for figure in started:
            figure.result()

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=kind is not None)
