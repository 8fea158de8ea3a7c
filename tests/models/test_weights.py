"""Weights as safetensors: round trips, byte-identical files, metadata, one-line errors for a
file that does not fit, file modes, and snapshots."""

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.weights import (
    load_weights,
    make_readable,
    save_tensors,
    save_weights,
    snapshot,
)
from kdistill.models.zoo import build_model


def small_cnn(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build_model("cnn", channels=[2, 3], image_size=8, **kwargs)
    model.train()(torch.randn(4, 1, 8, 8))  # BN statistics and num_batches_tracked move off their defaults
    return model.eval()


@pytest.fixture
def umask():
    """Set a umask for one test, then put the old one back."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)
        return mask

    yield set_mask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_round_trip_restores_parameters_and_buffers(tmp_path):
    source, target = small_cnn(0), small_cnn(1)
    path = tmp_path / "w.safetensors"
    save_weights(source, path)
    assert not torch.equal(target.head[-1].weight, source.head[-1].weight)
    assert load_weights(target, path) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert int(target.stages[0][1].num_batches_tracked) == 1
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(target(x), source(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary left behind


def test_weights_are_cast_to_the_models_dtype(tmp_path):
    source = nn.Linear(3, 2).double()
    save_weights(source, tmp_path / "w.safetensors")
    target = load_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")
    assert target.weight.dtype == torch.float32
    assert torch.equal(target.weight, source.weight.float())


def test_the_same_weights_save_byte_identical_files(tmp_path):
    save_weights(small_cnn(0), tmp_path / "a.safetensors")
    save_weights(small_cnn(0), tmp_path / "b.safetensors")  # another model, the same weights
    save_weights(small_cnn(0), tmp_path / "a.safetensors")  # overwritten in place
    save_weights(small_cnn(1), tmp_path / "c.safetensors")
    a, b, c = ((tmp_path / f"{n}.safetensors").read_bytes() for n in "abc")
    assert a == b and a != c


def test_tensor_order_does_not_change_the_bytes_and_the_layout_is_aligned(tmp_path):
    x, y = torch.arange(6, dtype=torch.float32).view(2, 3), torch.tensor([7, 8, 9], dtype=torch.int64)
    save_tensors({"x": x, "y": y}, tmp_path / "a.safetensors", {"b": "2", "a": "1"})
    save_tensors({"y": y, "x": x}, tmp_path / "b.safetensors", {"a": "1", "b": "2"})
    raw = (tmp_path / "a.safetensors").read_bytes()
    assert raw == (tmp_path / "b.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size % 8 == 0  # the data starts 8-byte aligned
    header_text = raw[8 : 8 + size].decode().rstrip(" ")
    header = json.loads(header_text)
    assert list(header) == sorted(header) and header["__metadata__"] == {"a": "1", "b": "2"}
    assert header_text == json.dumps(header, sort_keys=True, separators=(",", ":"))
    assert header["x"]["shape"] == [2, 3] and header["y"]["dtype"] == "I64"
    assert len(raw) == 8 + size + 6 * 4 + 3 * 8
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("x"), x) and torch.equal(f.get_tensor("y"), y)


def test_metadata_is_kept(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(nn.Linear(2, 2), path, {"method": "kd", "stage": "1"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"method": "kd", "stage": "1"}
    save_weights(nn.Linear(2, 2), path)
    with safe_open(str(path), "pt") as f:
        assert not f.metadata()


def test_a_file_that_does_not_fit_is_a_one_line_error_and_leaves_the_model(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(small_cnn(0, hidden=5), path)  # an extra hidden layer in the head
    target = small_cnn(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(KDistillError) as err:
        load_weights(target, path, owner="student")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"student.weights: {path} does not fit the student model")
    assert "unexpected ['head.5.bias', 'head.5.weight']" in message
    assert "wrong shape ['head.2.weight', 'head.2.bias']" in message
    assert message.endswith("check student.model and student.args.")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_missing_keys_are_named(tmp_path):
    save_tensors({"weight": torch.zeros(2, 3)}, tmp_path / "w.safetensors")
    with pytest.raises(KDistillError, match=r"missing \['bias'\], unexpected \[\], wrong shape \[\]"):
        load_weights(nn.Linear(3, 2), tmp_path / "w.safetensors")


def test_bad_files_are_one_line_errors(tmp_path):
    model = nn.Linear(2, 2)
    (tmp_path / "w.pt").write_bytes(b"pickle")
    with pytest.raises(KDistillError, match=r"^teacher.weights: .*w.pt is not a .safetensors file; convert it first.$"):
        load_weights(model, tmp_path / "w.pt", owner="teacher")
    with pytest.raises(KDistillError, match=r"^model.weights: .*none.safetensors not found.$"):
        load_weights(model, tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(KDistillError, match=r"^model.weights: cannot read .*bad.safetensors: ") as err:
        load_weights(model, tmp_path / "bad.safetensors")
    assert "\n" not in str(err.value)
    with pytest.raises(KDistillError, match="NUL byte"):
        load_weights(model, "w\0.safetensors")


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_saved_files_get_the_mode_of_a_new_file(tmp_path, umask, mask):
    umask(mask)
    save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    assert mode(tmp_path / "w.safetensors") == 0o666 & ~mask


def test_make_readable_sets_files_to_the_new_file_mode(tmp_path, umask):
    umask(0o027)
    (tmp_path / "sub").mkdir()
    files = [tmp_path / "a.safetensors", tmp_path / "sub" / "b.json"]
    for f in files:
        f.write_text("x")
        os.chmod(f, 0o600)
    os.chmod(tmp_path / "sub", 0o700)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o600)
    (tmp_path / "link").symlink_to(outside)
    try:
        make_readable(tmp_path)
        assert [mode(f) for f in files] == [0o640, 0o640]
        assert mode(tmp_path / "sub") == 0o700  # folders are left alone
        assert mode(outside) == 0o600  # a link is not followed
    finally:
        outside.unlink()


def test_snapshot_is_a_detached_cpu_copy():
    model = small_cnn(0)
    snap = snapshot(model)
    assert snap.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) and v.device.type == "cpu" and not v.requires_grad
               for k, v in snap.items())
    with torch.no_grad():
        model.head[-1].weight.add_(1.0)
        model.stages[0][1].running_mean.add_(1.0)
    assert torch.equal(snap["head.2.weight"] + 1.0, model.head[-1].weight)
    assert torch.equal(snap["stages.0.1.running_mean"] + 1.0, model.stages[0][1].running_mean)


def test_tied_weights_are_saved_and_load_back(tmp_path):
    from torch import nn

    from kdistill.models.weights import load_weights, save_weights

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 3, bias=False)
            self.out = nn.Linear(4, 3, bias=False)
            self.out.weight = self.embed.weight  # one tensor under two names, as tied embeddings

    model = Tied()
    save_weights(model, tmp_path / "t.safetensors")
    other = Tied()
    load_weights(other, tmp_path / "t.safetensors")
    assert torch.equal(other.embed.weight, model.embed.weight) and other.out.weight is other.embed.weight
