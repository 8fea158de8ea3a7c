import gzip

import numpy as np
import pytest

from kdistill.data.idx import load_idx_folder, read_idx
from kdistill.errors import KDistillError


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder, n_train=12, n_test=4):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_folder_of_idx_files(tmp_path):
    _fake_mnist(tmp_path)
    train, test = load_idx_folder(str(tmp_path))
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (4, 1, 28, 28)
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert train.y.tolist() == [i % 10 for i in range(12)]


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(KDistillError, match="apt-get install -y dataset-fashion-mnist"):
        load_idx_folder(str(tmp_path / "nowhere"))
    with pytest.raises(KDistillError, match="not found"):
        load_idx_folder(str(tmp_path))
