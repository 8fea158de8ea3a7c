"""A loaded teacher near chance, or far below the accuracy its weights record, stops the run
before training (kdistill/evaluate/teacher_check.py, pipeline.check_teacher_preprocess)."""

import pytest
import torch
from safetensors import safe_open

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.evaluate.teacher_check import chance_level, judge_teacher, near_chance_mark, wilson_upper
from kdistill.models.weights import save_weights
from kdistill.models.zoo import build_model
from kdistill.pipeline import build_pipeline
from kdistill.recipe import load_recipe

TEACHER = {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}


def _recipe(name, teacher, stages, **data):
    return {"name": name, "latency": False, "threads": 1,
            "data": {"source": "digits", "labelled": 100, **data}, "teacher": teacher,
            "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}}, "stages": stages}


@pytest.fixture(autouse=True)
def _no_rasterising(monkeypatch):
    """The report's figures are built but not rasterised (seconds otherwise): savefig is given
    the file kdistill opened, which is left empty."""
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: None)


DISTIL = [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]


def _labels(n, classes=10):
    return torch.arange(n) % classes


def test_near_chance_is_judged_by_the_upper_end_of_the_interval():
    assert near_chance_mark(0.1) == pytest.approx(0.15) and near_chance_mark(0.5) == pytest.approx(0.55)
    assert chance_level(torch.tensor([0, 0, 0, 1])) == 0.75  # the most common class's share
    with pytest.raises(KDistillError, match="near chance"):
        judge_teacher(110, _labels(1000), None)  # 11% of 1000: surely near chance
    judge_teacher(1, _labels(10), None)  # 1 of 10: too few inputs to tell a teacher from chance
    judge_teacher(600, _labels(1000), None)  # a working teacher
    judge_teacher(560, _labels(1000, 2), None)  # two classes: 56% is not refused as near chance ...
    with pytest.raises(KDistillError, match="near chance"):
        judge_teacher(500, _labels(1000, 2), None)  # ... 50% is
    assert wilson_upper(0, 5) > 0.3 and wilson_upper(5, 5) == pytest.approx(1.0)


def test_far_below_the_recorded_accuracy_is_refused():
    with pytest.raises(KDistillError, match="far below the 0.950 its weights record") as err:
        judge_teacher(225, _labels(1000), 0.95)  # 22.5% where it scored 95%
    assert "data.check_teacher: false" in str(err.value) and "\n" not in str(err.value)
    judge_teacher(830, _labels(1000), 0.927)  # somewhat lower: information, not a refusal


def test_a_random_teacher_from_weights_is_refused_unless_told_to_go_on(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "random.safetensors"
    save_weights(build_model("mlp", in_features=64, hidden=[16], num_classes=10), weights)
    loaded = {**TEACHER, "weights": str(weights)}
    with pytest.raises(KDistillError, match="teacher: scores .* near chance .*class order"):
        build_pipeline(load_recipe(_recipe("r", loaded, DISTIL)))
    build_pipeline(load_recipe(_recipe("r", loaded, DISTIL, check_teacher=False)))  # told to go on
    build_pipeline(load_recipe(_recipe("built", TEACHER, DISTIL)))  # a random teacher built here: not judged
    trained_here = [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1}, *DISTIL]
    build_pipeline(load_recipe(_recipe("t", loaded, trained_here)))  # trained in the run: not judged


def test_a_trained_teacher_records_its_accuracy_and_passes_when_loaded(tmp_path):
    stages = [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 3}]
    first = run(_recipe("t", TEACHER, stages), runs_dir=tmp_path, progress=False)
    with safe_open(str(first.run_dir / "teacher.safetensors"), framework="pt") as f:
        recorded = float(f.metadata()["test_accuracy"])
    assert recorded == pytest.approx(first.summary["test"]["teacher"]["accuracy"])
    loaded = {**TEACHER, "weights": str(first.run_dir / "teacher.safetensors")}
    second = run(_recipe("s", loaded, DISTIL), runs_dir=tmp_path, progress=False)
    assert second.summary["test"]["teacher"]["accuracy"] == pytest.approx(recorded)
