import torch

from kdistill.data import ArraySource, split


def _source(n_per_class=100, classes=5):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ArraySource(torch.randn(len(y), 1, 4, 4), y)


def test_labelled_count_is_stratified_and_seeded():
    train, test = _source(), _source(10)
    a = split(train, test, labelled=50, val=100, seed=3)
    b = split(train, test, labelled=50, val=100, seed=3)
    assert torch.equal(a.labelled_set.x, b.labelled_set.x)
    assert torch.bincount(a.labelled_set.y).tolist() == [10] * 5
    assert torch.bincount(a.val_set.y).tolist() == [20] * 5
    assert len(a.transfer_set) == 500 - 50 - 100
    c = split(train, test, labelled=50, val=100, seed=4)
    assert not torch.equal(a.labelled_set.x, c.labelled_set.x)


def test_fraction_and_disjoint_sets():
    train = _source()
    train.x = torch.arange(500.0).reshape(500, 1, 1, 1)  # each input names its row
    s = split(train, _source(10), labelled=0.1, val=0.1, seed=0)
    rows = [set(part.x.flatten().tolist()) for part in (s.labelled_set, s.val_set, s.transfer_set)]
    assert [len(r) for r in rows] == [50, 50, 400]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])


def test_transfer_set_labels_are_withheld():
    train = _source()
    s = split(train, _source(10), labelled=25, val=50, seed=0)
    assert (s.transfer_set.y == -1).all()
    # the pool: labelled + transfer in their original order, only the labelled keep labels
    assert len(s.pool_set) == 450 and (s.pool_set.y >= 0).sum() == 25
    assert torch.equal(s.pool_labels[s.pool_set.y >= 0], s.pool_set.y[s.pool_set.y >= 0])
    assert (s.pool_labels >= 0).all()
    rows = {tuple(r.flatten().tolist()) for r in train.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in s.pool_set.x[:5])
