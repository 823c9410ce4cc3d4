"""``sweeplab report``: one self-contained HTML file (verdicts, tables, Pareto front, figures,
media, record), checked in a real headless browser (Debian's ``chromium``): the page loads
offline with no console message and the screenshot shows the colour-coded verdicts table."""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sweeplab import load_sweep
from sweeplab.cli import main
from sweeplab.results.report import VERDICT_COLOURS
from sweeplab.spec import validate_spec

JOB = {
    "name": "reported",
    "description": "a tiny grid with repeats, two objectives and two hypotheses",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.25},
    "train": {"epochs": 2, "batch_size": 64, "n_blocks": 1, "threads": 1, "optimizer": "adam"},
    "search": {"sampler": "grid", "max_concurrent": 2, "space": {
        "filters": {"type": "categorical", "values": [2, 8]},
        "lr": {"type": "categorical", "values": [0.01, 1.0e-6]}}},
    "metric": ["val_accuracy", "num_params"],
    "scheduler": {"type": "none"},
    "repeats": 2,
    "checkpoint": {"every": 2, "keep": 1},
    "hypotheses": [
        {"id": "lr_matters", "claim": "a working learning rate beats a useless one", "metric": "val_accuracy",
         "a": {"lr": 0.01}, "b": {"lr": 1.0e-6}, "direction": "A > B"},
        {"id": "width", "claim": "8 filters beat 2", "metric": "val_accuracy", "a": {"filters": 8},
         "b": {"filters": 2}, "direction": "A > B"},
    ],
}


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def open_in_browser(page: Path, screenshot: Path) -> tuple[list[str], str]:
    """Load ``page`` in headless Chromium: its console messages (every one is a failure here:
    the report logs nothing, and an uncaught error or a resource it could not load is logged),
    and the DOM after its script ran; writes a screenshot."""
    base = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--window-size=1400,1600", f"--user-data-dir={screenshot.parent / 'profile'}"]
    shot = subprocess.run(base + ["--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}",
                                  page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return console, dom


needs_browser = pytest.mark.skipif(_browser() is None, reason="no headless browser installed (Debian: apt-get "
                                   "install chromium; .ci/run installs it), so the report is not opened")


@pytest.fixture(scope="module")
def report_sweep(ray_session, tmp_path_factory):
    from sweeplab.runner import run_sweep

    path, _ = run_sweep(validate_spec(copy.deepcopy(JOB)), storage_path=str(tmp_path_factory.mktemp("r")), verbose=0)
    sweep = load_sweep(path)
    # a family's media as the loop's MediaWriter logs it (tensorboardX image grids, *.media event files)
    from tensorboardX import SummaryWriter

    best = sweep.pick("max val_accuracy")
    writer = SummaryWriter(logdir=str(Path(path) / Path(best["path"]).name), filename_suffix=".media")
    grid = np.zeros((3, 8, 16), dtype=np.float32)
    grid[1] = 1.0  # a green picture
    writer.add_image("samples", grid, 2)
    writer.close()
    return sweep


def test_report_is_one_self_contained_file(report_sweep, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", report_sweep.path, report_sweep.path, "--out", str(out)]) == 0
    text = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched from elsewhere
    assert not re.search(r"""src=["'](?!data:)""", text)  # every image inlined
    for section in ("Hypotheses", "Mean ± std per filters, lr", "Pareto front", "Learning curves",
                    "Parameter importances", "Parallel coordinates", "Reproducibility record", "lr_matters",
                    "Media of the best trial", "samples"):
        assert section in text, section
    assert text.count("<section") == 2 and '<a href="#sweep-1">' in text  # two sweeps, a contents list
    verdicts = report_sweep.verdicts().set_index("id")
    assert verdicts.loc["lr_matters", "verdict"] == "supported"
    assert '<td class="v-supported">supported</td>' in text
    assert text.count("data:image/png;base64,") >= 2 * 5  # curves, Pareto, importances, parallel, slice, media


@needs_browser
def test_report_opens_in_headless_chromium_and_shows_the_verdicts(report_sweep, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "report.html"
    assert main(["report", report_sweep.path, "--out", str(out)]) == 0
    console, dom = open_in_browser(out, tmp_path / "shot.png")
    assert console == [], console
    assert 'data-ready="1"' in dom and 'class="v-supported"' in dom  # the script ran to its end
    pixels = (imread(tmp_path / "shot.png")[..., :3] * 255).round().astype(int)
    green = tuple(int(VERDICT_COLOURS["supported"][i:i + 2], 16) for i in (1, 3, 5))
    hits = np.all(np.abs(pixels - np.array(green)) <= 2, axis=-1)
    assert hits.sum() > 200, "the screenshot does not show a 'supported' verdict cell"
    assert np.argwhere(hits)[:, 0].min() < 1600  # on the first screen


@needs_browser
def test_the_browser_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>notDefined();</script></body></html>")
    console, _ = open_in_browser(page, tmp_path / "broken.png")
    assert any("notDefined is not defined" in line for line in console)
