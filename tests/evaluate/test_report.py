"""Reports people look at: figures of a small real run, report.md linking them, a self-contained HTML."""

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.evaluate.report import compare_runs, write_report


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    recipe = {"name": "small", "latency": False, "data": {"source": "digits", "labelled": 100, "val": 50},
              "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8}},
              "student": {"model": "cnn", "args": {"channels": [4], "image_size": 8}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2},
                         {"name": "baseline", "train": "baseline", "epochs": 2},
                         {"name": "distil", "data": "transfer", "epochs": 2, "loss": [{"loss": "kd"}],
                          "keep_best": True}]}
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


def _copy(finished, tmp_path):
    import shutil

    return Path(shutil.copytree(finished, tmp_path / "run"))


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "no labels"])
def test_a_corrupt_predictions_file_is_one_line_naming_it(finished, tmp_path, damage):
    run_dir = _copy(finished, tmp_path)
    path = run_dir / "predictions.safetensors"
    if damage == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        saved = load_file(str(path))
        save_file({k: v for k, v in saved.items() if k != "labels"}, str(path))
    with pytest.raises(KDistillError, match="predictions.safetensors") as err:
        write_report(run_dir)
    assert str(path) in _one_line(err) and "delete it" in str(err.value)
    # the fix the message gives: without the file, the report is drawn less those two figures
    path.unlink()
    write_report(run_dir)
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {"learning_curves.png", "tradeoff.png"}
    assert "reliability" not in (run_dir / "report.md").read_text()


def test_cli_report_of_a_corrupt_predictions_file_exits_2_with_one_line(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "predictions.safetensors").write_bytes(b"\x00not a safetensors file" * 50)
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", "report", str(run_dir)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: report: ") and done.stderr.count("\n") == 1
    assert "predictions.safetensors" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("text, match", [
    ('{"test": {"student": {"accuracy": 0.9', "not valid JSON"),
    ("\xff\xfe garbage", "not JSON text|not valid JSON"),
    ("[1, 2]", "holds no 'test' metrics"),
    ('{"name": "x"}', "holds no 'test' metrics"),
])
def test_a_malformed_summary_is_one_line_naming_it(finished, tmp_path, text, match):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "summary.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(KDistillError, match=match) as err:
        write_report(run_dir)
    assert str(run_dir / "summary.json") in _one_line(err)
    with pytest.raises(KDistillError, match=match):
        compare_runs([finished, run_dir], tmp_path / "cmp")


def test_a_keep_best_stage_logs_its_kept_epoch_after_its_epochs(finished):
    import json

    records = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    distil = [r for r in records if r["stage"] == "distil"]
    assert [r.get("epoch") for r in distil] == [1, 2, None]
    best = max((1, 2), key=lambda e: (distil[e - 1]["val"]["accuracy"], -e))  # the earlier epoch on a tie
    assert distil[-1]["kept_epoch"] == best and distil[-1]["score"] == distil[best - 1]["val"]["accuracy"]
    assert "kept_epoch" not in json.dumps(records[:-1])  # no other stage keeps its best


@pytest.mark.parametrize("line, match", [
    ('{"stage": "distil", "model": "student", "epo', "line 3 is not valid JSON"),
    ('["not", "a", "record"]', "line 3 is not an epoch's record"),
    ('{"stage": "distil", "epoch": 1}', "line 3 is not an epoch's record"),
])
def test_a_malformed_metrics_line_is_one_line_naming_it(finished, tmp_path, line, match):
    run_dir = _copy(finished, tmp_path)
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], line, *lines[3:]]) + "\n")
    with pytest.raises(KDistillError, match=match) as err:
        write_report(run_dir)
    assert str(path) in _one_line(err) and "delete" in str(err.value)


@pytest.mark.parametrize("name", ["report.md", "report.html", "plots/tradeoff.png"])
def test_an_output_path_taken_by_a_folder_is_refused_before_writing(finished, tmp_path, name):
    import shutil

    from kdistill.evaluate.report import check_report_inputs

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    (copy / name).unlink(missing_ok=True)
    (copy / name).mkdir(parents=True)
    with pytest.raises(KDistillError, match="should be a file"):
        check_report_inputs([copy], None)


def test_few_label_tables_show_balanced_accuracy_and_the_majority_class_rate():
    """56% on a 69/31 test set is worse than always saying the common class: the tables say so."""
    from kdistill.evaluate.report import comparison_table, embedding_table

    few = {"prototype@10": 0.56, "prototype_balanced@10": 0.5, "logreg@10": 0.7, "logreg_balanced@10": 0.52,
           "majority_rate": 0.69}
    summary = {"test": {"teacher": {**few, "sentences_per_s": 100.0, "params": 1000},
                        "student": {**few, "sentences_per_s": 300.0, "params": 100, "mean_cosine": 0.9}}}
    head, _, _, student = comparison_table(summary).splitlines()
    columns = [c.strip() for c in head.strip("|").split("|")]
    cells = dict(zip(columns, (c.strip() for c in student.strip("|").split("|"))))
    assert cells["centre @10 labels"] == "56.00%" and cells["centre @10 balanced"] == "50.00%"
    assert cells["logreg @10 labels"] == "70.00%" and cells["logreg @10 balanced"] == "52.00%"
    assert cells["majority class"] == "69.00%"

    emb = {"teacher": {"prototype@1": 0.56, "prototype_balanced@1": 0.5, "majority_rate": 0.69},
           "student": {"prototype@1": 0.6, "prototype_balanced@1": 0.55, "majority_rate": 0.69}}
    table = embedding_table({"embedding": emb})
    assert "| embedding space | prototype@1 |" in table  # one column a method and number of labels
    assert "| teacher (PCA) | 56.00% / 50.00% |" in table and "| student (adapted tap) | 60.00% / 55.00% |" in table
    assert "most common class: 69.00%" in table and "balanced accuracy" in table
    # a summary written before balanced accuracy was reported reads as it did
    old = embedding_table({"embedding": {role: {"prototype@1": 0.5} for role in ("teacher", "student")}})
    assert "| teacher (PCA) | 50.00% |" in old and "most common" not in old
