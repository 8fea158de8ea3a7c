import pytest
import torch

from kdistill.data import ArraySource, split
from kdistill.errors import KDistillError


def _source(n_per_class=100, classes=5):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return ArraySource(torch.randn(len(y), 1, 4, 4), y)


def test_labelled_count_is_stratified_and_seeded():
    train, test = _source(), _source(10)
    a = split(train, test, labelled=50, val=100, seed=3)
    b = split(train, test, labelled=50, val=100, seed=3)
    assert torch.equal(a.labelled_set.x[:], b.labelled_set.x[:])
    assert torch.bincount(a.labelled_set.y).tolist() == [10] * 5
    assert torch.bincount(a.val_set.y).tolist() == [20] * 5
    assert len(a.transfer_set) == 500 - 50 - 100
    c = split(train, test, labelled=50, val=100, seed=4)
    assert not torch.equal(a.labelled_set.x[:], c.labelled_set.x[:])


def test_fraction_and_disjoint_sets():
    train = _source()
    train.x = torch.arange(500.0).reshape(500, 1, 1, 1)  # each input names its row
    s = split(train, _source(10), labelled=0.1, val=0.1, seed=0)
    rows = [set(part.x[:].flatten().tolist()) for part in (s.labelled_set, s.val_set, s.transfer_set)]
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


def test_splits_are_index_sets_over_the_source():
    train = _source()
    s = split(train, _source(10), labelled=25, val=50, seed=0)
    for part in (s.labelled_set, s.val_set, s.transfer_set, s.pool_set):
        assert part.source is train  # a view, not a copy
        assert torch.equal(part.x[:], train.x[part.index])


def test_unlabelled_rows_only_join_the_transfer_set():
    train = _source()  # 5 classes x 100
    train.x = torch.arange(500.0).reshape(500, 1, 1, 1)  # each input names its row
    train.y[torch.arange(500) % 2 == 1] = -1  # every other row has no label: 50 labelled a class
    s = split(train, _source(10), labelled=50, val=0.2, seed=0)
    assert torch.bincount(s.labelled_set.y).tolist() == [10] * 5  # stratified over the real classes
    assert torch.bincount(s.val_set.y).tolist() == [10] * 5  # 0.2 of the 250 labelled rows
    rows = [set(part.x[:].flatten().long().tolist()) for part in (s.labelled_set, s.val_set, s.transfer_set)]
    assert all(r % 2 == 0 for r in rows[0] | rows[1])  # drawn from labelled rows only
    assert set(range(1, 500, 2)) <= rows[2] and len(rows[2]) == 500 - 50 - 50
    assert (s.pool_labels[(s.pool_set.x[:].flatten().long() % 2 == 1)] == -1).all()  # no label invented


def test_more_labelled_than_labelled_rows_fails():
    train = _source()
    train.y[:450] = -1
    with pytest.raises(KDistillError, match=r"labelled \(40\) \+ val \(20\) exceed the 50 labelled training samples "
                                            r"\(450 more are labelled -1\)"):
        split(train, _source(10), labelled=40, val=20)


def test_a_classify_test_set_needs_every_label(tmp_path):
    from kdistill.recipe import load_recipe
    from kdistill.data.load import prepare_data
    from kdistill.families import family_of

    train, test = _source(), _source(10)
    test.y[3] = -1
    recipe = load_recipe({"data": {"source": "custom", "labelled": 10}, "stages": [{"name": "s"}]})
    splits, _ = prepare_data(recipe, (train, test))  # the family's rule (families.Classifier.check_data)
    with pytest.raises(KDistillError, match="1 of the 50 test labels are -1"):
        family_of(recipe).check_data(splits)
    embed = load_recipe({"data": {"source": "custom", "labelled": 10}, "task": "embed", "stages": [{"name": "s"}]})
    family_of(embed).check_data(splits)  # an encoder's test set needs no label
    train.y[0] = -3
    with pytest.raises(KDistillError, match="a training label is -3"):
        prepare_data(recipe, (train, _source(10)))
