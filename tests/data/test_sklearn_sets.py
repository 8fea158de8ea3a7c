"""scikit-learn's digits as a kdistill source (kdistill/data/sklearn_sets.py): 1,797 8x8 images
in [0, 1], split stratified and seeded, recording that they were divided by 16."""

import numpy as np
import pytest
import torch

from kdistill.data.sklearn_sets import DIVIDE_BY, load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_shapes_types_and_the_split_sizes(digits):
    train, test = digits
    assert len(train) + len(test) == 1797
    assert len(test) == 450  # ceil(0.25 * 1797), as scikit-learn rounds the test share
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.num_classes == test.num_classes == 10


def test_pixels_are_divided_by_16_into_0_1(digits):
    from sklearn.datasets import load_digits as sk_digits

    train, test = digits
    for part in (train, test):
        assert float(part.x.min()) == 0.0 and float(part.x.max()) == 1.0
        assert part.divided_by == DIVIDE_BY == 16.0
        # the raw pixels are integers 0..16: times 16 they are whole numbers again
        assert torch.equal(part.x * 16, (part.x * 16).round())
    raw = sk_digits().images.astype(np.float32)
    assert sorted(np.unique(raw).tolist()) == list(range(17))
    # every image of the split is one of scikit-learn's, divided by 16 (summed pixels as a fingerprint)
    sums = {float(s) for s in raw.reshape(len(raw), -1).sum(1) / 16}
    assert {float(s) for s in train.x.flatten(1).sum(1)} <= sums


def test_the_split_is_stratified(digits):
    train, test = digits
    train_counts = torch.bincount(train.y, minlength=10)
    test_counts = torch.bincount(test.y, minlength=10)
    total = train_counts + test_counts
    assert total.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # scikit-learn's class counts
    # each class keeps its share of the test set to within one image
    assert ((test_counts.double() - total.double() * 450 / 1797).abs() <= 1).all()


def test_the_split_follows_the_seed_and_the_fraction():
    a, _ = load_digits(seed=0)
    again, _ = load_digits(seed=0)
    other, _ = load_digits(seed=1)
    assert torch.equal(a.x, again.x) and torch.equal(a.y, again.y)
    assert not torch.equal(a.x, other.x)
    assert sorted(a.y.tolist()) == sorted(other.y.tolist())  # stratified: the same classes, other images
    train, test = load_digits(test_fraction=0.5)
    assert len(test) == 899 and len(train) == 898
    assert ((torch.bincount(test.y) - torch.bincount(train.y)).abs() <= 1).all()
