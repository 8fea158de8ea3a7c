"""docs/benchmarks.md is what docs/bench_pages.py writes from bench/results/ (issue 31)."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_pages():
    spec = importlib.util.spec_from_file_location("bench_pages", ROOT / "docs" / "bench_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(bench_pages):
    return bench_pages.render(ROOT)[0]


def test_committed_page_is_the_generators_output(bench_pages, page):
    assert (ROOT / "docs" / "benchmarks.md").read_text() == page, "run: python docs/bench_pages.py"
    assert bench_pages.main(["--check"]) == 0
    for png in ("label_efficiency.png", "lm_gap_vs_speed.png"):
        assert (ROOT / "docs" / "benchmarks" / "img" / png).exists()


def test_no_degenerate_spreads(page):
    assert "(n=1)" not in page
    assert "± 0.00" not in page
    assert not re.search(r"± 0\.0+\b", page)


def _headline(page):
    lines = page.split("| benchmark | headline | result |")[1].split("\n\n")[0].strip().splitlines()[1:]
    return "\n".join(lines)


def _copy(tmp_path):
    (tmp_path / "docs").mkdir()
    shutil.copytree(ROOT / "bench" / "results", tmp_path / "bench" / "results")
    return tmp_path / "bench" / "results"


def test_headline_numbers_come_from_the_results(bench_pages, page, tmp_path):
    before = _headline(page)
    res = _copy(tmp_path)
    # label efficiency: KD at 1% labels, every seed 0.5 points higher
    rows = [json.loads(line) for line in (res / "label_efficiency.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        if r["row"] == "KD" and r["labels"] == "1%":
            r["accuracy"] += 0.005
    (res / "label_efficiency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # crash and resume: one trial no longer identical
    kills = [json.loads(line) for line in (res / "kill_anywhere.jsonl").read_text().splitlines() if line.strip()]
    kills[0]["identical"] = False
    (res / "kill_anywhere.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kills))
    after = _headline(bench_pages.render(tmp_path)[0])
    assert "91.19% against 81.58%" in before and "91.69% against 81.58%" in after
    assert "40 of 40" in before and "39 of 40" in after
    # the stale page is seen by --check
    (tmp_path / "docs" / "benchmarks.md").write_text(page)
    assert bench_pages.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_headline_number_is_read(bench_pages, page, tmp_path):
    """Bending every number in the results files (x -> x ** 1.1) changes every cell of the headline table."""
    res = _copy(tmp_path)
    def bump(x):
        if isinstance(x, bool):
            return x
        if isinstance(x, float):
            return x ** 1.1 if x > 0 else x
        if isinstance(x, dict):
            return {k: bump(v) for k, v in x.items()}
        if isinstance(x, list):
            return [bump(v) for v in x]
        return x
    for p in res.rglob("*.json"):
        p.write_text(json.dumps(bump(json.loads(p.read_text()))))
    for p in res.rglob("*.jsonl"):
        p.write_text("".join(json.dumps(bump(json.loads(line))) + "\n" for line in p.read_text().splitlines() if line.strip()))
    md = res / "data.md"
    md.write_text(md.read_text().replace("| 0.84 |", "| 0.79 |"))
    before = _headline(page).splitlines()
    after = _headline(bench_pages.render(tmp_path)[0]).splitlines()
    for b, a in zip(before, after):
        if "crash and resume" in b:
            continue  # a count of trials, changed in the test above
        assert b != a, b
