"""write_student (kdistill/export/student.py): a student alone as safetensors, TorchScript or ONNX
beside student.json, written under temporary names so that a failed export leaves nothing.
The whole job on a run directory (export_run): tests/test_rebuild.py."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import kdistill.export.student as student_module
from kdistill.data.preprocess import Preprocess
from kdistill.errors import KDistillError
from kdistill.export.student import EXTENSIONS, FORMATS, write_student
from kdistill.models.zoo import build_model


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", channels=[4], image_size=8).eval()


@pytest.fixture
def sample():
    torch.manual_seed(1)
    return torch.rand(6, 1, 8, 8)


def _write(model, sample, fmt, out, preprocess=None):
    meta = {"format": fmt, "recipe": "tiny", "input_shape": [None, 1, 8, 8]}
    return write_student(model, sample, meta, fmt, out, out / f"student.{EXTENSIONS[fmt]}", preprocess)


def test_the_formats_and_their_extensions():
    assert FORMATS == ("safetensors", "onnx", "torchscript")
    assert [EXTENSIONS[f] for f in FORMATS] == ["safetensors", "onnx", "pt"]


def test_safetensors_holds_the_students_tensors_and_its_preprocessing(cnn, sample, tmp_path):
    out = tmp_path / "new" / "folder"  # made, parents too
    meta = _write(cnn, sample, "safetensors", out, Preprocess(16.0, (0.25,), (0.5,)))
    target = out / "student.safetensors"
    assert meta["path"] == str(target) and "max_abs_diff" not in meta
    assert json.loads((out / "student.json").read_text()) == meta == {
        "format": "safetensors", "recipe": "tiny", "input_shape": [None, 1, 8, 8], "path": str(target)}
    state = load_file(str(target))
    assert state.keys() == cnn.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())
    with safe_open(str(target), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["recipe"] == "tiny"
    assert Preprocess.from_metadata(metadata) == Preprocess(16.0, (0.25,), (0.5,))
    assert sorted(p.name for p in out.iterdir()) == ["student.json", "student.safetensors"]  # no temporary files


def test_safetensors_without_preprocessing_records_the_recipe_alone(cnn, sample, tmp_path):
    _write(cnn, sample, "safetensors", tmp_path)
    with safe_open(str(tmp_path / "student.safetensors"), framework="pt") as f:
        assert f.metadata() == {"recipe": "tiny"}


def test_torchscript_gives_the_students_outputs(cnn, sample, tmp_path):
    meta = _write(cnn, sample, "torchscript", tmp_path)
    assert 0.0 <= meta["max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "student.json").read_text())["max_abs_diff"] == meta["max_abs_diff"]
    x = torch.rand(9, 1, 8, 8)  # another batch size than the traced one
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(meta["path"])(x), cnn(x), atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.json", "student.pt"]


def test_onnx_of_a_text_student_names_its_two_inputs(tokenizer_dir, tmp_path):
    """student.json says what the graph takes: the tokenizer's input_ids and attention_mask, not
    the packed (N, 2, L) the student takes in PyTorch."""
    pytest.importorskip("onnxruntime")
    from fixtures import ENCODER_TEXTS, tiny_encoder

    encoder = tiny_encoder(tokenizer_dir).eval()
    meta = write_student(encoder, encoder.tokenize(ENCODER_TEXTS), {"format": "onnx", "recipe": "tiny"}, "onnx",
                         tmp_path, tmp_path / "student.onnx", None)
    assert json.loads((tmp_path / "student.json").read_text())["onnx_inputs"] == ["input_ids", "attention_mask"]
    assert meta["max_abs_diff"] <= 1e-4


def test_onnx_gives_the_students_outputs(cnn, sample, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    meta = _write(cnn, sample, "onnx", tmp_path)
    assert meta["max_abs_diff"] <= 1e-4 and meta["onnx_inputs"] == ["input"]
    session = ort.InferenceSession(meta["path"], providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 8, 8)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, cnn(x), atol=1e-4, rtol=0)


class SignFlip(torch.nn.Module):
    """Python control flow on the values: a trace keeps only the branch its inputs took."""

    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_a_failed_export_leaves_nothing_behind(sample, tmp_path):
    mixed = torch.cat([sample[:2], -sample[2:]])  # traced on positive inputs, checked on negative ones too
    with pytest.raises(KDistillError, match="TorchScript student differs from PyTorch"):
        _write(SignFlip(), mixed, "torchscript", tmp_path / "new")
    assert not (tmp_path / "new").exists()  # the folder it made is removed again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    with pytest.raises(KDistillError):
        _write(SignFlip(), mixed, "torchscript", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]  # a folder of the user's stays, as it was


def test_an_interrupted_export_removes_its_half_written_file(cnn, sample, tmp_path, monkeypatch):
    written = []

    def half_written(model, sample, path, **kwargs):
        path.write_bytes(b"half an onnx file")
        written.append(path)
        raise KeyboardInterrupt  # not only errors: any interruption cleans up

    monkeypatch.setattr(student_module, "export_onnx", half_written)
    with pytest.raises(KeyboardInterrupt):
        _write(cnn, sample, "onnx", tmp_path / "out")
    assert written and written[0].name.endswith(".tmp")  # written under a temporary name
    assert not (tmp_path / "out").exists()


def test_an_existing_export_is_replaced_whole(cnn, sample, tmp_path):
    _write(cnn, sample, "safetensors", tmp_path)
    with torch.no_grad():
        for p in cnn.parameters():
            p.add_(1.0)
    _write(cnn, sample, "safetensors", tmp_path)
    state = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in cnn.state_dict().items())
