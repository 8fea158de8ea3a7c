"""One scaling rule for arrays whatever the door (kdistill/data/source.py: stored_scale): the same
uint8 bytes passed from Python and read from .npy files are divided alike, and the run says so."""

import numpy as np
import torch

from kdistill.data.load import prepare_data
from kdistill.recipe import load_recipe

STUDENT = {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}}


def _bytes():
    """Digits-sized uint8 images (N, 1, 8, 8) and labels, train and test."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (120, 1, 8, 8), dtype=np.uint8)
    y = np.arange(120) % 10
    return (x[:90], y[:90]), (x[90:], y[90:])


def _recipe(**data):
    return load_recipe({"name": "s", "latency": False, "data": {"labelled": 40, "normalize": "none", **data},
                        "student": STUDENT, "stages": [{"name": "b", "train": "student", "data": "labelled",
                                                        "epochs": 1, "loss": [{"loss": "ce"}]}]})


def test_the_same_bytes_through_python_and_npy_are_scaled_alike(tmp_path, capsys):
    (x, y), (xt, yt) = _bytes()
    for name, a in (("x", x), ("y", y), ("xt", xt), ("yt", yt)):
        np.save(tmp_path / f"{name}.npy", a)
    npy = _recipe(source="npy", path=str(tmp_path / "x.npy"),
                  files={"labels": str(tmp_path / "y.npy"), "test_path": str(tmp_path / "xt.npy"),
                         "test_labels": str(tmp_path / "yt.npy")})
    from_npy, info_npy = prepare_data(npy, None)
    said_npy = capsys.readouterr().err
    for given in ((x, y), (xt, yt)), ((torch.from_numpy(x), torch.from_numpy(y)), (torch.from_numpy(xt), torch.from_numpy(yt))):
        from_python, info_python = prepare_data(_recipe(source="custom"), given)
        said = capsys.readouterr().err
        assert info_python["preprocess"] == info_npy["preprocess"]
        assert info_python["preprocess"]["divide_by"] == 255.0
        assert info_python["inputs"] == info_npy["inputs"] == {"dtype": "uint8", "divided_by": 255.0}
        assert "uint8 inputs divided by 255" in said and said == said_npy
        rows = torch.arange(len(xt))
        seen_python = from_python.test_set.x.batch(rows, "cpu")
        assert torch.equal(seen_python, from_npy.test_set.x.batch(rows, "cpu"))
        assert float(seen_python.max()) <= 1.0 and float(seen_python.max()) > 0.9


def test_floats_are_taken_as_they_are_and_the_run_says_so(capsys):
    (x, y), (xt, yt) = _bytes()
    _, info = prepare_data(_recipe(source="custom"), ((x.astype(np.float32), y), (xt.astype(np.float32), yt)))
    assert info["inputs"]["divided_by"] == 1.0 and info["preprocess"]["divide_by"] == 1.0
    assert "float32 inputs taken as they are (values 0..255; pixels 0..255 given as uint8" in capsys.readouterr().err
