"""Checkpoints: names in training order, the newest kept, a damaged newest file skipped,
lazy modules, and the RNG restored."""

import io
import warnings

import pytest
import torch
from torch import nn

from kdistill.train.checkpoint import (
    checkpoint_name,
    has_checkpoint,
    load_latest,
    load_module_state,
    module_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def names(folder):
    """The files in ``folder`` but the checkpoints' checksum sidecars (checked: one a checkpoint)."""
    found = sorted(p.name for p in folder.iterdir())
    sidecars = [n for n in found if n.endswith(".blake2b")]
    assert sidecars == [n + ".blake2b" for n in found if n.startswith("ckpt-") and n.endswith(".pt")]
    return [n for n in found if n not in sidecars]


def test_checkpoint_name_format():
    assert checkpoint_name(1, 2, 3) == "ckpt-s01-e00002-b0000003.pt"


def test_names_sort_in_training_order():
    order = [(0, 0, 9), (0, 0, 10), (0, 0, 100), (0, 1, 0), (0, 10, 0), (1, 0, 0), (1, 0, 5), (2, 0, 0)]
    shuffled = [order[i] for i in (5, 0, 7, 2, 4, 1, 6, 3)]
    assert sorted(checkpoint_name(*k) for k in shuffled) == [checkpoint_name(*k) for k in order]


def test_save_keeps_the_newest_and_load_returns_the_newest(tmp_path):
    folder = tmp_path / "ckpt"  # made on the first save
    for step in (1, 2, 3, 10):
        path = save_checkpoint(folder, checkpoint_name(0, 0, step), {"step": step, "w": torch.full((2,), float(step))})
        assert path == folder / checkpoint_name(0, 0, step) and path.is_file()
    assert names(folder) == [checkpoint_name(0, 0, 3), checkpoint_name(0, 0, 10)]  # no temporary left
    state, path = load_latest(folder)
    assert path.name == checkpoint_name(0, 0, 10) and state["step"] == 10
    assert torch.equal(state["w"], torch.tensor([10.0, 10.0]))


def test_keep_counts_the_newest(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, checkpoint_name(1, step, 0), {"step": step}, keep=3)
    assert names(tmp_path) == [checkpoint_name(1, e, 0) for e in (2, 3, 4)]
    save_checkpoint(tmp_path, checkpoint_name(1, 5, 0), {"step": 5}, keep=1)
    assert names(tmp_path) == [checkpoint_name(1, 5, 0)]


def test_other_files_are_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "weights.pt").write_bytes(b"x")
    for step in range(3):
        save_checkpoint(tmp_path, checkpoint_name(0, 0, step), {}, keep=1)
    assert names(tmp_path) == [checkpoint_name(0, 0, 2), "notes.txt", "weights.pt"]


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(tmp_path):
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 1), {"step": 1}, keep=5)
    newest = save_checkpoint(tmp_path, checkpoint_name(0, 0, 2), {"step": 2, "w": torch.zeros(100)}, keep=5)
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 2])
    assert has_checkpoint(tmp_path)
    with pytest.warns(UserWarning, match=rf"checkpoint {newest.name} cannot be read \(.+\); using the one before it"):
        state, path = load_latest(tmp_path)
    assert state == {"step": 1} and path.name == checkpoint_name(0, 0, 1)


def test_garbage_and_code_are_skipped(tmp_path):
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 1), {"step": 1}, keep=5)
    (tmp_path / checkpoint_name(0, 0, 2)).write_bytes(b"")
    torch.save({"step": 3, "obj": Pickled()}, tmp_path / checkpoint_name(0, 0, 3))  # not weights-only
    (tmp_path / checkpoint_name(0, 0, 4)).write_bytes(b"not a checkpoint at all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, _ = load_latest(tmp_path)
    assert state == {"step": 1}
    assert [str(w.message).split(" ")[1] for w in caught] == [checkpoint_name(0, 0, s) for s in (4, 3, 2)]
    assert all("\n" not in str(w.message) for w in caught)


class Pickled:
    pass


def test_no_readable_checkpoint(tmp_path):
    assert load_latest(tmp_path) is None and not has_checkpoint(tmp_path)
    assert load_latest(tmp_path / "missing") is None and not has_checkpoint(tmp_path / "missing")
    (tmp_path / f".{checkpoint_name(0, 0, 1)}.tmp").write_bytes(b"half")  # a save cut short
    assert not has_checkpoint(tmp_path) and load_latest(tmp_path) is None
    (tmp_path / checkpoint_name(0, 0, 1)).write_bytes(b"damaged")
    assert has_checkpoint(tmp_path)  # present, though unreadable
    with pytest.warns(UserWarning):
        assert load_latest(tmp_path) is None


def lazy_model():
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.LazyLinear(4))


def test_module_state_leaves_out_lazy_parameters_and_round_trips(tmp_path):
    source = lazy_model()
    state = module_state(source)
    assert sorted(state) == ["0.bias", "0.weight"]
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 0), {"model": state})
    loaded, _ = load_latest(tmp_path)  # weights_only load: would refuse a lazy parameter
    target = lazy_model()
    load_module_state(target, loaded["model"])
    assert torch.equal(target[0].weight, source[0].weight) and torch.equal(target[0].bias, source[0].bias)
    assert isinstance(target[2].weight, nn.parameter.UninitializedParameter)


def test_materialised_lazy_parameters_are_kept_and_required():
    source = lazy_model()
    source(torch.randn(1, 2))  # materialises the LazyLinear
    state = module_state(source)
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    target = lazy_model()
    load_module_state(target, state)  # loading materialises the target's lazy layer
    assert torch.equal(target[2].weight, source[2].weight)
    materialised = lazy_model()
    materialised(torch.randn(1, 2))
    with pytest.raises(RuntimeError, match=r"missing keys \['2.weight', '2.bias'\]"):
        load_module_state(materialised, module_state(lazy_model()))


def test_unexpected_or_missing_keys_are_refused():
    state = module_state(nn.Linear(2, 3))
    with pytest.raises(RuntimeError, match=r"missing keys \[\], unexpected keys \['extra'\]"):
        load_module_state(nn.Linear(2, 3), {**state, "extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"missing keys \['bias'\]"):
        load_module_state(nn.Linear(2, 3), {"weight": state["weight"]})


def test_rng_state_makes_the_next_draws_repeat(tmp_path):
    torch.manual_seed(123)
    torch.rand(3)
    state = rng_state()
    first = (torch.rand(5), torch.randn(2, 2), torch.randint(0, 1000, (4,)))
    torch.rand(50)  # move on
    set_rng_state(state)
    second = (torch.rand(5), torch.randn(2, 2), torch.randint(0, 1000, (4,)))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # also through a checkpoint file, read back weights-only
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 0), {"rng": state})
    torch.manual_seed(999)
    set_rng_state(load_latest(tmp_path)[0]["rng"])
    assert torch.equal(torch.rand(5), first[0])


def test_a_checkpoint_changed_after_it_was_written_is_skipped_for_the_one_before(tmp_path):
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 1), {"step": 1}, keep=5)
    newest = save_checkpoint(tmp_path, checkpoint_name(0, 0, 2), {"step": 2, "w": torch.zeros(100)}, keep=5)
    raw = newest.read_bytes()
    at = raw.index(bytes(400))
    newest.write_bytes(raw[:at] + b"\x01" * 400 + raw[at + 400:])  # the same size, the weights' bytes changed
    assert torch.load(io.BytesIO(newest.read_bytes()), weights_only=True)["step"] == 2  # torch alone reads it
    with pytest.warns(UserWarning, match=rf"checkpoint {newest.name} cannot be read \(it does not match its "
                                         rf"checksum in {newest.name}.blake2b: damaged after it was written\)"):
        state, path = load_latest(tmp_path)
    assert state == {"step": 1} and path.name == checkpoint_name(0, 0, 1)


def test_a_checkpoint_without_a_sidecar_is_read_as_before(tmp_path):
    torch.save({"step": 7}, tmp_path / checkpoint_name(0, 0, 7))  # written before sidecars were
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, _ = load_latest(tmp_path)
    assert state == {"step": 7}


def test_a_sidecar_left_without_its_checkpoint_is_removed(tmp_path):
    (tmp_path / (checkpoint_name(0, 0, 1) + ".blake2b")).write_text("0 0", encoding="utf8")  # a crash between
    save_checkpoint(tmp_path, checkpoint_name(0, 0, 2), {"step": 2})
    assert names(tmp_path) == [checkpoint_name(0, 0, 2)]


def test_no_advice_to_load_with_weights_only_false_reaches_the_user(tmp_path, capfd):
    torch.save({"step": 3, "obj": Pickled()}, tmp_path / checkpoint_name(0, 0, 3))  # code: never loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_latest(tmp_path) is None
    [warning] = [str(w.message) for w in caught]
    assert "objects other than tensors, numbers and strings" in warning and "weights_only" not in warning
    out, err = capfd.readouterr()
    assert "weights_only" not in out + err


def test_a_full_disk_raises_its_oserror_not_the_zip_writers_error(tmp_path, monkeypatch):
    """torch's zip writer, closing a file whose write failed, raises a RuntimeError over the
    OSError; the run reports the OSError (a full disk) and leaves no partial file."""
    import errno

    def full(state, file):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as err:
        save_checkpoint(tmp_path, checkpoint_name(0, 1, 0), {"x": 1})
    assert err.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
