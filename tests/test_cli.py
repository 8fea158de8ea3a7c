"""End to end: the real CLI on digits, reading the files it wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from kdistill.models.zoo import build_model
from fixtures import stage_records

RECIPE = Path(__file__).parents[1] / "recipes" / "digits_quick.yaml"
FAST = ["stages.teacher.epochs=3", "stages.baseline.epochs=5", "stages.distil.epochs=3", "latency=false"]


def kdistill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = kdistill("run", RECIPE, *FAST, "--runs-dir", runs)
    assert result.returncode == 0, result.stderr
    return runs / "digits-quick", result.stdout


def test_quiet_prints_the_run_directory_alone(tmp_path):
    one = ["stages.teacher.epochs=1", "stages.baseline.epochs=1", "stages.distil.epochs=1", "latency=false"]
    result = kdistill("run", RECIPE, *one, "--runs-dir", tmp_path, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'digits-quick'}\n" and "epoch" not in result.stderr


def test_run_writes_a_complete_run_directory(finished_run):
    run_dir, stdout = finished_run
    assert {p.name for p in run_dir.iterdir()} >= {
        "recipe.yaml", "metrics.jsonl", "summary.json", "student.safetensors", "report.md",
        "teacher.safetensors", "baseline.safetensors"}
    assert not run_dir.with_name("digits-quick.incomplete").exists()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["teacher"] * 3 + ["baseline"] * 5 + ["distil"] * 3
    distil = stage_records(run_dir)["distil"][-1]["train"]
    assert {"loss", "kd", "hint", "lr"} <= set(distil)
    summary = json.loads((run_dir / "summary.json").read_text())
    for role in ("teacher", "baseline", "student"):
        assert 0.0 <= summary["test"][role]["accuracy"] <= 1.0
    assert summary["data"]["labelled"] == 50
    assert "student (distilled)" in (run_dir / "report.md").read_text()
    assert "student (distilled)" in stdout
    written = yaml.safe_load((run_dir / "recipe.yaml").read_text())  # every default recorded, the decay's too
    assert all(stage["optimizer"]["decay_bias_and_norm"] is False for stage in written["stages"])


def test_student_file_holds_the_student_alone(finished_run):
    run_dir, _ = finished_run
    saved = load_file(run_dir / "student.safetensors")
    student = build_model("cnn", channels=[8, 16], convs_per_stage=1, image_size=8)
    assert set(saved) == set(student.state_dict())  # no teacher, no adapters


def test_distillation_beats_the_label_only_student(finished_run):
    summary = json.loads((finished_run[0] / "summary.json").read_text())
    assert summary["test"]["student"]["accuracy"] > summary["test"]["baseline"]["accuracy"]


def test_eval_reproduces_the_summary(finished_run):
    run_dir, _ = finished_run
    result = kdistill("eval", run_dir, "--no-latency")
    assert result.returncode == 0, result.stderr
    accuracy = json.loads((run_dir / "summary.json").read_text())["test"]["student"]["accuracy"]
    assert f"{100 * accuracy:.2f}%" in result.stdout.splitlines()[-1]


def test_existing_run_is_not_overwritten(finished_run):
    run_dir, _ = finished_run
    before = (run_dir / "summary.json").read_bytes()
    result = kdistill("run", RECIPE, *FAST, "--runs-dir", run_dir.parent, "-q")
    assert result.returncode == 2
    assert "already exists" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (run_dir / "summary.json").read_bytes() == before


def test_bad_recipe_fails_in_one_line_before_training(tmp_path):
    result = kdistill("run", RECIPE, "stages.distil.epocs=3", "--runs-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: recipe: unknown key 'stages.2.epocs'; did you mean 'epochs'?"
    assert list(tmp_path.iterdir()) == []
    result = kdistill("run", RECIPE, "stages.distil.loss.hint.student=stages.9", "--runs-dir", tmp_path)
    assert result.returncode == 2 and "no module named 'stages.9'" in result.stderr
    assert list(tmp_path.iterdir()) == []
    debug = kdistill("--debug", "run", RECIPE, "stages.distil.epocs=3", "--runs-dir", tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "KDistillError" in debug.stderr


def test_help_lists_debug():
    result = kdistill("--help")
    assert result.returncode == 0 and "--debug" in result.stdout


def test_a_bug_of_our_own_is_not_reported_as_bad_input(monkeypatch, tmp_path):
    """Exit 2 is for the user's input; any other exception leaves main() with its traceback (exit 1)."""
    import kdistill.cli as cli
    import kdistill.evaluate.report

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(kdistill.evaluate.report, "check_report_inputs", broken)
    monkeypatch.setattr(sys, "argv", ["kdistill", "report", str(tmp_path)])
    with pytest.raises(ZeroDivisionError):
        cli.main()


def test_kdistill_warnings_are_one_line_others_as_python_shows_them():
    import io

    from kdistill import cli
    from kdistill.errors import KDistillWarning

    ours, theirs = io.StringIO(), io.StringIO()
    cli._one_line_warning("cache: x.npy is damaged; building it again", KDistillWarning, "cache.py", 3, ours)
    cli._one_line_warning("something of torch's", UserWarning, "torch.py", 7, theirs)
    assert ours.getvalue() == "warning: cache: x.npy is damaged; building it again\n"
    assert "torch.py:7: UserWarning: something of torch's" in theirs.getvalue()


def test_an_error_line_is_one_line_and_bounded_keeping_its_start_and_its_fix():
    from kdistill.cli import MESSAGE_CHARS, one_line

    line = one_line("model: unknown name '" + "x" * 50_000 + "'; give a name the zoo knows\nor a path")
    assert len(line) <= MESSAGE_CHARS and "\n" not in line
    assert line.startswith("model: unknown name 'xxx") and line.endswith("give a name the zoo knows or a path")
    assert one_line("short; fix it") == "short; fix it"
