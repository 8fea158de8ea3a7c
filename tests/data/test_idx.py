import numpy as np
import torch
import pytest

from kdistill.data.idx import load_idx_folder, read_idx
from kdistill.errors import KDistillError

from fixtures import _write_idx, write_fake_mnist


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_folder_of_idx_files(tmp_path):
    write_fake_mnist(tmp_path)
    train, test = load_idx_folder(str(tmp_path))
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (4, 1, 28, 28)
    assert train.x.dtype == torch.uint8 and train.scale == 255.0  # bytes until the batch
    assert float(train.x.max()) > 1.0
    assert train.y.tolist() == [i % 10 for i in range(12)]


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(KDistillError, match="apt-get install -y dataset-fashion-mnist"):
        load_idx_folder(str(tmp_path / "nowhere"))
    with pytest.raises(KDistillError, match="not found"):
        load_idx_folder(str(tmp_path))
