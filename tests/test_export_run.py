"""kdistill export: a finished run's student alone, in three formats, checked on real inputs."""

import json

import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.export import export_run


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
    assert len(saved["normalize"]["mean"]) == 1  # the standardisation the inputs need
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
