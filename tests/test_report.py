"""Reports people look at: figures of a small real run, report.md linking them, a self-contained HTML."""

import base64
import re

import pytest
from PIL import Image

from kdistill import run
from kdistill.report import compare_runs, write_report


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    recipe = {"name": "small", "latency": False, "data": {"source": "digits", "labelled": 100, "val": 50},
              "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8}},
              "student": {"model": "cnn", "args": {"channels": [4], "image_size": 8}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2},
                         {"name": "baseline", "train": "baseline", "epochs": 2},
                         {"name": "distil", "data": "transfer", "epochs": 2, "loss": [{"loss": "kd"}]}]}
    return run(recipe, runs_dir=runs, progress=False).run_dir


def _non_blank(path) -> bool:
    image = Image.open(path).convert("L")
    lo, hi = image.getextrema()
    return image.size[0] > 100 and hi - lo > 50  # drawn on, not an empty canvas


def test_run_writes_figures_and_both_reports(finished):
    names = {p.name for p in (finished / "plots").iterdir()}
    assert names == {"learning_curves.png", "tradeoff.png", "reliability.png", "disagreement.png"}
    assert all(_non_blank(finished / "plots" / n) for n in names)
    md = (finished / "report.md").read_text()
    assert all(f"(plots/{n})" in md for n in names) and "| student (distilled) |" in md
    page = (finished / "report.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 4 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "<table>" in page and "student (distilled)" in page and "src='plots/" not in page  # self-contained


def test_comparison_of_several_runs(finished, tmp_path):
    path = compare_runs([finished, finished], tmp_path / "cmp")
    text = path.read_text()
    assert "| small | student (distilled) |" in text and "| small (2) | student (distilled) |" in text and (tmp_path / "cmp" / "comparison.png").is_file()
    assert _non_blank(tmp_path / "cmp" / "comparison.png")


def test_report_is_redrawn_from_the_files(finished):
    (finished / "plots" / "tradeoff.png").unlink()
    write_report(finished)
    assert (finished / "plots" / "tradeoff.png").is_file()
