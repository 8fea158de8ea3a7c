"""The source interface (kdistill/data/source.py): fetch by index, random decoding seeded by
(seed, epoch, sample), subsets and a held-out test part."""

import numpy as np
import pytest
import torch

from kdistill.data import ArraySource
from kdistill.data.source import (UNLABELLED, SubsetSource, file_listing_fingerprint, hold_out, sample_generator,
                                  stack_items)
from kdistill.errors import KDistillError


def test_sample_generators_depend_on_seed_epoch_and_sample_alone():
    draw = lambda view, i: sample_generator(view, i).random()  # noqa: E731
    assert draw((0, 1), 5) == draw((0, 1), 5)
    assert len({draw((0, 1), 5), draw((0, 2), 5), draw((1, 1), 5), draw((0, 1), 6)}) == 4


def test_a_source_is_a_torch_dataset_of_input_label_pairs():
    source = ArraySource(torch.arange(12, dtype=torch.uint8).reshape(6, 2), torch.tensor([0, 1, 2, 0, 1, -1]))
    x, y = source[1]
    assert x.tolist() == [2, 3] and y == 1
    assert [y for _, y in source.__getitems__([5, 0])] == [-1, 0]
    assert source.num_classes == 3 and source.units == 255.0  # uint8: pixels, as the npy source takes them


def test_hold_out_draws_a_stratified_test_part_from_labelled_rows():
    y = torch.tensor([0, 1] * 10 + [UNLABELLED] * 4)
    source = ArraySource(torch.arange(24.0)[:, None], y)
    train, test = hold_out(source, 0.2, seed=0, what="data")
    assert isinstance(test, SubsetSource) and len(test) == 4 and len(train) == 20
    assert sorted(test.y.tolist()) == [0, 0, 1, 1]  # stratified, never an unlabelled row
    rows = set(train.fetch(torch.arange(20))[:, 0].long().tolist()) | set(test.fetch(torch.arange(4))[:, 0].long().tolist())
    assert rows == set(range(24))  # disjoint and complete
    assert hold_out(source, 0.2, seed=0, what="data")[1].fingerprint() == test.fingerprint()
    assert hold_out(source, 0.2, seed=1, what="data")[1].fingerprint() != test.fingerprint()
    with pytest.raises(KDistillError, match="test_path"):
        hold_out(source, 20, seed=0, what="data")


def test_samples_of_different_shapes_fail_in_one_line():
    with pytest.raises(KDistillError, match="resize"):
        stack_items([np.zeros((1, 2, 2)), np.zeros((1, 3, 2))], "image_folder")


def test_a_file_listing_fingerprint_reads_names_sizes_and_times(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"12")
    first = file_listing_fingerprint([f])
    assert file_listing_fingerprint([f]) == first
    f.write_bytes(b"123")
    assert file_listing_fingerprint([f]) != first
