"""The Python API with the user's own modules and tensors."""

import json

import pytest
import torch
from fixtures import as_terminal
from torch import nn

from kdistill import run
from kdistill.data.sklearn_sets import load_digits
from kdistill.errors import KDistillError


class UserStudent(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.encoder(x))


def _recipe(name):
    return {
        "name": name,
        "teacher": {"model": "cnn", "args": {"channels": [16, 32], "image_size": 8}},
        # no student section: the module passed in is the student
        "data": {"source": "custom", "labelled": 100},
        "stages": [
            {"name": "teacher", "train": "teacher", "data": "full", "epochs": 3, "batch_size": 64},
            {"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 64,
             "loss": [{"loss": "kd"}, {"loss": "hint", "student": "encoder", "teacher": "head.0"}]},
            {"name": "finetune", "data": "labelled", "epochs": 2, "batch_size": 32,
             "optimizer": {"lr": 0.01}, "loss": [{"loss": "kd", "args": {"alpha": 0.5}}]},
        ],
        "latency": False,
    }


def _numpy_data():
    train, test = load_digits()
    return (train.x.numpy(), train.y.numpy()), (test.x.numpy(), test.y.numpy())


def test_run_with_user_objects(tmp_path):
    result = run(_recipe("api"), student=UserStudent(), data=_numpy_data(), runs_dir=tmp_path, progress=False)
    assert isinstance(result.student, UserStudent)
    assert (tmp_path / "api" / "student.safetensors").is_file()
    assert "(python) UserStudent" in (tmp_path / "api" / "recipe.yaml").read_text()
    assert result.summary["test"]["student"]["accuracy"] > 0.5
    assert result.summary["data"]["transfer"] == len(_numpy_data()[0][0]) - 100


def _seeded_student():
    torch.manual_seed(0)
    return UserStudent()


def test_same_seed_same_student(tmp_path):
    a = run(_recipe("a"), ["stages.0.epochs=1", "stages.1.epochs=1", "stages.2.epochs=1"],
            student=_seeded_student(), data=_numpy_data(), runs_dir=tmp_path, progress=False)
    b = run(_recipe("b"), ["stages.0.epochs=1", "stages.1.epochs=1", "stages.2.epochs=1"],
            student=_seeded_student(), data=_numpy_data(), runs_dir=tmp_path, progress=False)
    for (k, va), vb in zip(a.student.state_dict().items(), b.student.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_run_that_trains_only_a_teacher(tmp_path):
    recipe = {"name": "teacher-only", "data": {"source": "digits", "labelled": 0}, "latency": False,
              "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1}]}
    result = run(recipe, runs_dir=tmp_path, progress=False)
    assert set(result.summary["test"]) == {"teacher"}
    weights = [p.name for p in result.run_dir.glob("*.safetensors") if p.name != "predictions.safetensors"]
    assert weights == ["teacher.safetensors"]  # no student


def test_a_student_stage_needs_a_student(tmp_path):
    recipe = {"name": "x", "data": {"source": "digits"}, "stages": [{"name": "s", "epochs": 1}]}
    with pytest.raises(KDistillError, match="names none"):
        run(recipe, runs_dir=tmp_path, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.incomplete").exists()


def test_several_teachers(tmp_path):
    teacher_spec = {"model": "cnn", "args": {"channels": [8], "image_size": 8}}
    first = run({"name": "t", "data": {"source": "digits", "labelled": 0}, "latency": False,
                 "teacher": teacher_spec,
                 "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2}]},
                runs_dir=tmp_path, progress=False)
    weights = str(first.run_dir / "teacher.safetensors")
    recipe = {"name": "multi", "data": {"source": "digits", "labelled": 50}, "latency": False,
              "teacher": {**teacher_spec, "weights": weights},
              "teachers": {"second": {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}},
              "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 2, "loss": [
                  {"loss": "multi_kd", "teacher": ["logits", "second:logits"],
                   "args": {"weighting": "confidence"}},
                  {"loss": "hint", "student": "stages.0", "teacher": "second:head.0"}]}]}
    result = run(recipe, runs_dir=tmp_path, progress=False)
    assert result.summary["test"]["teacher"]["accuracy"] == first.summary["test"]["teacher"]["accuracy"]
    last = (result.run_dir / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"multi_kd"' in last and '"hint"' in last


def test_metrics_also_go_to_tensorboard_when_asked(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = {"name": "tb", "latency": False, "tensorboard": True, "data": {"source": "digits", "labelled": 50},
              "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2}]}
    result = run(recipe, runs_dir=tmp_path, progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    losses = events.Scalars("teacher/train/loss")
    assert [e.step for e in losses] == [1, 2]
    last = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert losses[-1].value == pytest.approx(last["train"]["loss"], rel=1e-5)  # the same numbers as metrics.jsonl


CUT_RECIPE = {"name": "cut", "latency": False, "device": "cpu", "data": {"source": "digits", "labelled": 100},
              "teacher": {"model": "cnn", "args": {"channels": [4, 4, 4], "pool_stages": 0, "image_size": 8}},
              "student": {"from_teacher": {"keep": {"stages": [0, 2]}}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "batch_size": 64,
                          "loss": [{"loss": "kd"}]}]}


def test_the_student_as_cut_is_in_every_results_table(tmp_path, monkeypatch):
    """A student cut from the teacher: the sub-network as cut, before any training, is judged too,
    in summary.json, report.md and the table the CLI prints (a classifier here; every family).
    With progress off, not a bar is drawn, even on a terminal."""
    from kdistill.evaluate.report import comparison_table

    terminal = as_terminal(monkeypatch)
    result = run(CUT_RECIPE, runs_dir=tmp_path, progress=False)
    assert terminal.getvalue() == ""
    test = json.loads((result.run_dir / "summary.json").read_text())["test"]
    assert list(test) == ["teacher", "cut", "student"]
    assert test["cut"]["params"] == test["student"]["params"] < test["teacher"]["params"]
    assert 0 <= test["cut"]["agreement"] <= 1 and test["cut"] != test["student"]  # distillation moved it
    row = "| student as made from the teacher (untrained) |"
    assert row in comparison_table(result.summary) and row in (result.run_dir / "report.md").read_text()
    assert not (result.run_dir / "cut.safetensors").exists()  # rebuilt from the teacher when needed


def test_a_run_shows_bars_for_the_teacher_pass_and_the_final_evaluation(tmp_path, monkeypatch):
    """Passes of more than a few seconds (here, with no delay: every pass) show a bar on a terminal."""
    terminal = as_terminal(monkeypatch)
    run(CUT_RECIPE, runs_dir=tmp_path, progress=True)
    bars = terminal.getvalue()
    for name in ("teacher outputs", "teacher: test set", "cut: test set", "student: test set"):
        assert f"{name}:" in bars, name
    assert " samples/s" in bars
