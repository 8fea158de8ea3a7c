"""The npy source (kdistill/data/npy_files.py, NpySource in kdistill/data/arrays.py): inputs
memory-mapped from a .npy file, labels from another, the test set given or held out."""

import pickle

import numpy as np
import pytest
import torch

from kdistill.data.npy_files import load_npy_source
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec

from fixtures import two_class_recipe


def _spec(path, **files):
    return DataSpec(source="npy", path=str(path), files=files)


def _write(tmp_path, n=40, dtype=np.uint8, name="x", labels=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1, 4, 4)).astype(dtype)
    np.save(tmp_path / f"{name}.npy", x)
    y = np.arange(n) % 4
    if labels:
        np.save(tmp_path / f"{name}_y.npy", y)
    return x, y


def test_fetch_reads_the_rows_asked_in_any_order(tmp_path):
    x, y = _write(tmp_path)
    train, _ = load_npy_source(tmp_path / "x.npy", _spec(tmp_path / "x.npy", labels=str(tmp_path / "x_y.npy")))
    source = train.base
    assert isinstance(source.array, np.memmap)  # mapped, not loaded
    for rows in ([5, 1, 30, 1], [39, 0], list(range(40))[::-1]):
        got = source.fetch(torch.tensor(rows))
        assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(x[rows]))
    assert source.scale == 255.0 and not source.tokens and source.num_classes == 4
    assert torch.equal(source.y, torch.from_numpy(y))


def test_held_out_test_set_is_labelled_and_disjoint(tmp_path):
    _write(tmp_path)
    spec = _spec(tmp_path / "x.npy", labels=str(tmp_path / "x_y.npy"), test=8)
    train, test = load_npy_source(spec.path, spec)
    assert (len(train), len(test)) == (32, 8)
    assert set(train.rows.tolist()).isdisjoint(test.rows.tolist())
    assert sorted(test.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]  # stratified


def test_test_path_and_its_labels(tmp_path):
    _write(tmp_path)
    x_test, _ = _write(tmp_path, n=12, name="t", seed=1)
    spec = _spec(tmp_path / "x.npy", labels=str(tmp_path / "x_y.npy"), test_path=str(tmp_path / "t.npy"),
                 test_labels=str(tmp_path / "t_y.npy"))
    train, test = load_npy_source(spec.path, spec)
    assert (len(train), len(test)) == (40, 12)
    assert torch.equal(test.fetch(torch.tensor([11, 2])), torch.from_numpy(x_test[[11, 2]]))


def test_float_inputs_are_float32_and_unlabelled_by_default(tmp_path):
    x, _ = _write(tmp_path, dtype=np.float64, labels=False)
    np.save(tmp_path / "y.npy", np.array([0, 1] * 20))
    spec = _spec(tmp_path / "x.npy")
    train, _ = load_npy_source(spec.path, _spec(tmp_path / "x.npy", test_path=str(tmp_path / "x.npy")))
    assert (train.y == -1).all()
    got = train.fetch(torch.tensor([3]))
    assert got.dtype == torch.float32 and train.scale == 1.0
    assert torch.allclose(got, torch.from_numpy(x[[3]]).float())
    with pytest.raises(KDistillError, match="holding out"):  # nothing labelled to hold out
        load_npy_source(spec.path, spec)


@pytest.mark.parametrize("bad, match", [
    ("short", r"holds 40 inputs but the labels 39"),
    ("missing", r"data.files.labels: .*nolabels.npy does not exist"),
    ("floats", r"label 0.5 at sample 0 is not a class id"),
    ("2d", r"shape \(40, 2\)"),
])
def test_bad_labels_fail_in_one_line(tmp_path, bad, match):
    _write(tmp_path, labels=False)
    labels = {"short": np.arange(39), "floats": np.full(40, 0.5), "2d": np.zeros((40, 2), dtype=int)}.get(bad)
    if labels is not None:
        np.save(tmp_path / "y.npy", labels)
    path = tmp_path / ("nolabels.npy" if bad == "missing" else "y.npy")
    with pytest.raises(KDistillError, match=match) as err:
        load_npy_source(tmp_path / "x.npy", _spec(tmp_path / "x.npy", labels=str(path)))
    assert "\n" not in str(err.value)


def test_bad_inputs_fail_in_one_line(tmp_path):
    _write(tmp_path)
    with pytest.raises(KDistillError, match="does not exist"):
        load_npy_source(tmp_path / "no.npy", _spec(tmp_path / "no.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(KDistillError, match="cannot open .*junk.npy as a .npy array"):
        load_npy_source(tmp_path / "junk.npy", _spec(tmp_path / "junk.npy"))
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.ones(3))
    with pytest.raises(KDistillError, match="npz archive"):
        load_npy_source(tmp_path / "two.npz", _spec(tmp_path / "two.npz"))
    with pytest.raises(KDistillError, match="test_labels"):  # labelled training data, unlabelled test data
        load_npy_source(tmp_path / "x.npy", _spec(tmp_path / "x.npy", labels=str(tmp_path / "x_y.npy"),
                                                  test_path=str(tmp_path / "x.npy")))
    np.save(tmp_path / "wide.npy", np.zeros((5, 1, 4, 5), dtype=np.uint8))
    with pytest.raises(KDistillError, match=r"samples are \(1, 4, 5\) but the training samples \(1, 4, 4\)"):
        load_npy_source(tmp_path / "x.npy", _spec(tmp_path / "x.npy", test_path=str(tmp_path / "wide.npy")))


def test_pickles_the_path_not_the_array(tmp_path):
    x = np.zeros((2000, 3, 16, 16), dtype=np.uint8)  # 1.5 MB
    np.save(tmp_path / "big.npy", x)
    train, _ = load_npy_source(tmp_path / "big.npy", _spec(tmp_path / "big.npy", test_path=str(tmp_path / "big.npy")))
    blob = pickle.dumps(train)
    assert len(blob) < 100_000  # the labels and the path, not the pixels
    again = pickle.loads(blob)
    assert torch.equal(again.fetch(torch.tensor([7])), train.fetch(torch.tensor([7])))


def test_fingerprint_follows_the_file(tmp_path):
    _write(tmp_path)
    spec = _spec(tmp_path / "x.npy", test_path=str(tmp_path / "x.npy"))
    first = load_npy_source(spec.path, spec)[0].fingerprint()
    assert load_npy_source(spec.path, spec)[0].fingerprint() == first
    _write(tmp_path, n=41)
    assert load_npy_source(spec.path, spec)[0].fingerprint() != first


def test_run_distils_from_npy_files(tmp_path):
    from kdistill import run

    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = (np.where(y[:, None, None, None] == 1, 200, 40) + rng.integers(-30, 30, (120, 1, 8, 8))).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    recipe = two_class_recipe("npy", {"source": "npy", "path": str(tmp_path / "x.npy"), "labelled": 20,
                                      "files": {"labels": str(tmp_path / "y.npy"), "test": 20}})
    result = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    assert result.summary["data"]["train"] == 100 and result.summary["data"]["test"] == 20
    assert result.summary["test"]["student"]["accuracy"] > 0.5
