import numpy as np
import pytest
import torch

from kdistill.data import ArraySource, as_source, normalize
from kdistill.errors import KDistillError


def test_numpy_pairs_and_datasets_become_sources():
    x, y = np.zeros((6, 1, 4, 4), dtype=np.uint8), np.arange(6) % 3
    source = as_source((x, y), "training")
    assert source.x.dtype == torch.uint8 and source.num_classes == 3  # bytes until the batch
    assert as_source((x.astype(np.float64), y), "training").x.dtype == torch.float32
    dataset = [(torch.ones(2), 1), (torch.zeros(2), 0)]
    used = as_source(dataset, "test")
    assert used.y.tolist() == [1, 0] and used.dataset is dataset  # used as it is, not copied
    assert used.fetch(torch.tensor([1, 0])).tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_mismatched_lengths_fail():
    with pytest.raises(KDistillError, match="labels"):
        ArraySource(torch.zeros(3, 2), torch.zeros(2))


def test_normalize_uses_training_statistics():
    train = ArraySource(torch.tensor([[[[0.0]]], [[[2.0]]]]), torch.tensor([0, 1]))
    test = ArraySource(torch.tensor([[[[1.0]]]]), torch.tensor([0]))
    mean, std = normalize(train, test)
    assert mean == [1.0] and std == pytest.approx([2 ** 0.5])
    assert test.x.item() == 0.0
