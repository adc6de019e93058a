"""FigurePool: figures drawn in worker processes are all written before the page is made, and a
figure that fails is not lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.results.drawing import FigurePool


def _write(text: str, path: Path) -> Path:
    path.write_text(text)
    return path


def _fail(path: Path) -> Path:
    raise ValueError(f"nothing to draw into {path.name}")


@pytest.mark.parametrize("workers", [1, 2])
def test_every_figure_started_is_written_once_the_pool_has_waited(tmp_path: Path,
                                                                  workers: int) -> None:
    with FigurePool(workers) as pool:
        paths = [pool.draw(_write, f"figure {i}", path=tmp_path / f"{i}.png") for i in range(5)]
        pool.wait()
    assert paths == [tmp_path / f"{i}.png" for i in range(5)]
    assert [p.read_text() for p in paths] == [f"figure {i}" for i in range(5)]


def test_a_figure_that_fails_in_a_worker_fails_the_wait(tmp_path: Path) -> None:
    with FigurePool(2) as pool:
        pool.draw(_write, "fine", path=tmp_path / "fine.png")
        pool.draw(_fail, path=tmp_path / "broken.png")
        with pytest.raises(ValueError, match="nothing to draw into broken.png"):
            pool.wait()
    assert (tmp_path / "fine.png").read_text() == "fine"
