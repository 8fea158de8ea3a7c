"""The real Fashion-MNIST files (`make test` installs them from Debian's dataset-fashion-mnist)."""

import os

import pytest
import torch

from kdistill.data import split
from kdistill.data.idx import DEFAULT_DIR, load_idx_folder

pytestmark = pytest.mark.skipif(
    not os.path.isdir(DEFAULT_DIR) and not os.environ.get("CI"),
    reason="Fashion-MNIST not installed (make data)",
)


def test_standard_files_and_the_demo_split():
    train, test = load_idx_folder()
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.y).tolist() == [6000] * 10
    s = split(train, test, labelled=600, seed=0)
    assert torch.bincount(s.labelled_set.y).tolist() == [60] * 10
    assert len(s.transfer_set) == 59400
