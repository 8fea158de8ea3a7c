"""Jobs on a finished run directory (kdistill/rebuild.py): export_run writes the student alone, in three
formats, checked on real inputs; evaluate_run scores it again, on other data too."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.data.weights_meta import read_classes
from kdistill.rebuild import evaluate_run, export_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    recipe = {"name": "small", "latency": False, "data": {"source": "digits", "labelled": 100},
              "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8}},
              "student": {"model": "cnn", "args": {"channels": [4], "image_size": 8}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1},
                         {"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}
    return run(recipe, runs_dir=runs, progress=False)


@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "torchscript"])
def test_export_formats_give_the_students_outputs(finished, fmt, tmp_path):
    meta = export_run(finished.run_dir, fmt, tmp_path)
    saved = json.loads((tmp_path / "student.json").read_text())
    assert saved == meta and saved["input_shape"] == [None, 1, 8, 8] and saved["classes"] == [str(i) for i in range(10)]
    ops = [step["op"] for step in saved["preprocess"]]  # raw digits (0..16) -> the student's inputs
    assert ops == ["cast", "reshape", "divide", "subtract", "divide"] and saved["raw_input"]["shape"] == [None, 8, 8]
    assert len(saved["preprocess"][3]["value"]) == 1  # the standardisation: one mean a channel
    student = finished.student.cpu().eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        want = student(x)
    if fmt == "safetensors":
        state = load_file(meta["path"])
        assert state.keys() == student.state_dict().keys()  # the student alone: no teacher, no adapters
        return
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(meta["path"], providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    else:
        got = torch.jit.load(meta["path"])(x)
    assert torch.allclose(got, want, atol=1e-4)


def test_export_refuses_bad_requests(finished, tmp_path):
    with pytest.raises(KDistillError, match="unknown format 'pickle'"):
        export_run(finished.run_dir, "pickle", tmp_path)
    export_run(finished.run_dir, "safetensors", tmp_path)
    with pytest.raises(KDistillError, match="exists"):
        export_run(finished.run_dir, "safetensors", tmp_path)
    with pytest.raises(KDistillError, match="not a finished run directory"):
        export_run(tmp_path / "nothing", "onnx")


def _apply_steps(x, steps):
    """Apply student.json's preprocessing steps, as a user would, with numpy alone."""
    for step in steps:
        if step["op"] == "cast":
            x = x.astype(step["dtype"])
        elif step["op"] == "reshape":
            x = x.reshape(step["shape"])
        else:
            value = np.asarray(step["by"] if step["op"] == "divide" else step["value"], dtype=x.dtype)
            if "axis" in step:  # one value a channel
                value = value.reshape([-1 if d == step["axis"] else 1 for d in range(x.ndim)])
            x = x / value if step["op"] == "divide" else x - value
    return x


def test_raw_inputs_through_the_listed_steps_give_the_runs_accuracy(finished, tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    meta = export_run(finished.run_dir, "onnx", tmp_path)
    bunch = load_digits()  # the raw images: 0..16, (N, 8, 8), split as kdistill's digits source splits them
    _, raw, _, labels = train_test_split(bunch.images, bunch.target, test_size=0.25, random_state=0,
                                         stratify=bunch.target)
    assert raw.dtype.name == meta["raw_input"]["dtype"] and list(raw.shape[1:]) == meta["raw_input"]["shape"][1:]
    x = _apply_steps(raw, meta["preprocess"])
    assert x.dtype.name == meta["input_dtype"] and list(x.shape[1:]) == meta["input_shape"][1:]
    session = onnxruntime.InferenceSession(meta["path"], providers=["CPUExecutionProvider"])
    predicted = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)
    accuracy = float((predicted == labels).mean())
    assert accuracy == pytest.approx(finished.summary["test"]["student"]["accuracy"], abs=1e-6)


def test_a_failed_export_leaves_nothing(finished, tmp_path, monkeypatch):
    import kdistill.export.student as export_module

    def half_written(model, sample, path, **kwargs):
        path.write_bytes(b"half an onnx file")
        raise KDistillError("export_onnx: differs from PyTorch")

    monkeypatch.setattr(export_module, "export_onnx", half_written)
    with pytest.raises(KDistillError, match="differs"):
        export_run(finished.run_dir, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(KDistillError, match="differs"):
        export_run(finished.run_dir, "onnx", tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_run_with_a_loaded_teacher_exports_the_preprocessing_it_trained_on(finished, tmp_path):
    """A student-only export does not read the teacher's weights, so the run's own preprocessing
    (here the teacher's, recorded in its weights) must come from the run directory itself."""
    recipe = {"name": "loaded", "latency": False, "data": {"source": "digits", "labelled": 100},
              "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8},
                          "weights": str(finished.run_dir / "teacher.safetensors")},
              "student": {"model": "cnn", "args": {"channels": [4], "image_size": 8}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}
    done = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    used = done.summary["data"]["preprocess"]
    assert done.summary["data"]["normalize"] == "teacher" and used["mean"] is not None
    meta = export_run(done.run_dir, "safetensors", tmp_path / "out")
    assert {"op": "subtract", "value": used["mean"], "axis": 1} in meta["preprocess"]
    assert {"op": "divide", "by": used["std"], "axis": 1} in meta["preprocess"]


def test_eval_on_other_data_uses_the_runs_normalisation(tmp_path, fake_mnist):
    from kdistill.data.idx import load_idx_folder

    own, other = fake_mnist(tmp_path / "own", 40, 10, seed=0), fake_mnist(tmp_path / "other", 40, 30, seed=1)
    recipe = {"name": "idx", "latency": False, "data": {"source": "fashion_mnist", "path": str(own), "labelled": 20},
              "student": {"model": "mlp", "args": {"hidden": [8]}},
              "stages": [{"name": "s", "train": "student", "epochs": 1, "loss": [{"loss": "ce"}]}]}
    result = run(recipe, runs_dir=tmp_path, progress=False)
    summary = evaluate_run(result.run_dir, latency=False, data=other)
    train, _ = load_idx_folder(str(own))
    _, test = load_idx_folder(str(other))
    x = (test.x / 255 - (train.x / 255).mean()) / (train.x / 255).std()  # the run's own statistics, not the other data's
    with torch.no_grad():
        want = (result.student.eval()(x).argmax(1) == test.y).float().mean().item()
    assert summary["test"]["student"]["accuracy"] == pytest.approx(want, abs=1e-6)
    with pytest.raises(KDistillError, match="not found"):
        evaluate_run(result.run_dir, data=tmp_path / "missing")


def test_export_names_the_classes_of_data_classes(tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    done = run({"name": "named", "latency": False, "data": {"source": "digits", "labelled": 100, "classes": names},
                "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
                "stages": [{"name": "s", "data": "labelled", "epochs": 1, "loss": [{"loss": "ce"}]}]},
               runs_dir=tmp_path / "runs", progress=False)
    assert done.summary["classes"] == names
    assert read_classes(done.run_dir / "student.safetensors") == names  # recorded with the weights
    meta = export_run(done.run_dir, "safetensors", tmp_path / "out")
    assert meta["classes"] == names and json.loads((tmp_path / "out" / "student.json").read_text())["classes"] == names
