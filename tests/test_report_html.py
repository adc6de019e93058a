"""process_results.py end to end on synthetic folders: outputs, warnings and a report.html that
is one self-contained file (checked here without a browser, and rendered in headless Chromium
where it is installed)."""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import process_results
from tests.helpers_rundirs import grid_run

CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Six grid figures (the CC comparison, the latency CDFs, SLA attainment, throughput,
# utilisation, simulated vs measured: the fixture has both of one grid) and two of one run
# (timeline, arrivals).
FIGURES = 8


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Measured runs from an ordinary and a confidential VM, simulated runs from a non-CC and
    a CC profile set, one broken run; process_results run once over the four folders."""
    root = tmp_path_factory.mktemp("results")
    folders = {"vm": ("hf", "off", 1.0, None), "cvm": ("hf", "on", 1.5, None),
               "sim_noncc": ("sim", "off", 1.0, "h100-orig_noncc"),
               "sim_cc": ("sim", "on", 1.3, "h100-orig_cc")}
    for folder, (engine, cc_mode, slowdown, profiles) in folders.items():
        for strategy in ("BestBatch", "BestBatch+Timer"):
            for rate in (2.0, 4.0):
                for repeat in (0, 1):
                    grid_run(strategy, rate, repeat, engine, cc_mode, slowdown,
                             profiles).write(root / folder)
    broken = grid_run("Immediate", 2.0, 0, "hf", "on").write(root / "cvm")
    (broken / "requests.csv").unlink()
    out = root / "report"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = process_results.main([*(str(root / f) for f in folders), "--out", str(out)])
    assert status == 0
    return out, stderr.getvalue()


class _Page(HTMLParser):
    """Every tag and attribute of a page, and the text of its style elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_image_is_an_embedded_png_of_sane_size(processed: tuple[Path, str]) -> None:
    out, _ = processed
    sources = [attrs.get("src") or "" for tag, attrs in parse(out / "report.html").tags
               if tag == "img"]
    assert len(sources) == FIGURES
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        png = base64.b64decode(source[len(prefix):], validate=True)
        assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
        width, height = struct.unpack(">II", png[16:24])
        assert 400 <= width <= 3000 and 200 <= height <= 4000, (width, height)


def test_the_report_references_nothing_outside_itself(processed: tuple[Path, str]) -> None:
    out, _ = processed
    page = parse(out / "report.html")
    assert not {tag for tag, _ in page.tags} & {"script", "link", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert not re.search(r"url\(|@import", "".join(page.styles))
    assert "://" not in (out / "report.html").read_text(encoding="utf-8")


def test_measured_and_simulated_comparisons_are_both_reported_apart(
        processed: tuple[Path, str]) -> None:
    out, _ = processed
    cc = pd.read_csv(out / "cc_comparison.csv")
    pairs = cc.drop_duplicates(["engine", "platform", "strategy", "mean_rps"])
    assert sorted(pairs.groupby(["engine", "platform"]).size().items()) == [
        (("hf", "NVIDIA H100"), 4), (("sim", "h100-orig"), 4)]
    assert set(cc["runs_noncc"]) == {2} and set(cc["runs_cc"]) == {2}
    slower = cc[(cc["metric"] == "processing_mean_s") & (cc["engine"] == "hf")]
    assert slower["ratio_noncc_over_cc"].to_numpy() == pytest.approx([1 / 1.5] * 4)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert ("SIMULATED, not measured: 4 cells replayed from profile set h100-orig_noncc (CC off) "
            "and h100-orig_cc (CC on).") in text
    assert "Measured on NVIDIA H100: 4 cells" in text


def test_a_broken_run_is_named_and_the_others_are_summarised(
        processed: tuple[Path, str]) -> None:
    out, stderr = processed
    runs = pd.read_csv(out / "summary_runs.csv")
    assert len(runs) == 32 and "immediate__gamma__rate2__sla40__rep0" not in set(runs["run_id"])
    assert set(runs["group"]) == {"measured, CC off", "measured, CC on", "simulated, CC off",
                                  "simulated, CC on"}
    message = re.search(r"\S*immediate__gamma__rate2__sla40__rep0/requests\.csv: missing; run "
                        r"skipped", stderr)
    assert message is not None
    assert message.group(0) in (out / "report.html").read_text(encoding="utf-8")


def test_each_grid_cell_averages_its_two_repeats(processed: tuple[Path, str]) -> None:
    out, _ = processed
    cells = pd.read_csv(out / "summary_cells.csv")
    assert len(cells) == 16 and set(cells["runs"]) == {2}
    # Every run leaves exactly its last arrival unserved: 39 of 40 (rate 2) or 79 of 80 served.
    by_rate = cells.groupby("mean_rps")["requests_ok_mean"].unique()
    assert [list(v) for v in by_rate] == [[39.0], [79.0]]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install "
                                                  "chromium)")
def test_headless_chromium_decodes_every_figure(processed: tuple[Path, str],
                                                tmp_path: Path) -> None:
    out, _ = processed
    probe = ("<script>window.addEventListener('load', () => {"
             "const images = Array.from(document.images);"
             "const shown = images.filter(i => i.complete && i.naturalWidth > 0).length;"
             "const p = document.createElement('p'); p.id = 'decoded';"
             "p.textContent = shown + '/' + images.length; document.body.appendChild(p);"
             "});</script></body>")
    page = tmp_path / "report_probe.html"
    page.write_text((out / "report.html").read_text(encoding="utf-8")
                    .replace("</body>", probe), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    decoded = re.search(r'<p id="decoded">(\d+)/(\d+)</p>', result.stdout)
    assert decoded is not None, result.stderr[-2000:]
    assert (int(decoded.group(1)), int(decoded.group(2))) == (FIGURES, FIGURES)
