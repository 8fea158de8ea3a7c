"""A training batch (kdistill/data/batch.py): the samples ``index`` of a stage's data, their inputs,
their labels and which labels count."""

import torch

from kdistill.data.batch import Batch
from kdistill.data.samples import as_inputs
from kdistill.data.splits import UNLABELLED


def test_a_fetched_batch_marks_the_withheld_labels():
    x = torch.arange(12.0).reshape(6, 2)
    y = torch.tensor([3, UNLABELLED, 1, 0, UNLABELLED, 2])
    index = torch.tensor([4, 0, 1])
    batch = Batch.fetched(index, x[index], y[index], torch.device("cpu"), as_inputs(x))
    assert batch.index is index  # the index itself, where it was
    assert batch.x.tolist() == [[8.0, 9.0], [0.0, 1.0], [2.0, 3.0]]
    assert batch.y.tolist() == [UNLABELLED, 3, UNLABELLED]
    assert batch.mask.dtype == torch.bool and batch.mask.tolist() == [False, True, False]


def test_a_fully_labelled_batch_counts_every_label():
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 2])
    batch = Batch.fetched(torch.arange(3), x, y, "cpu", as_inputs(x))
    assert batch.mask.all() and torch.equal(batch.y, y) and batch.x.shape == (3, 1, 2, 2)


def test_a_fetched_batch_is_made_ready_on_the_device_from_its_stored_bytes():
    from kdistill.data import ArraySource, Preprocess
    from kdistill.data.samples import Inputs

    x = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)
    inputs = Inputs(ArraySource(x, torch.tensor([0, 1]), scale=255.0), prepare=Preprocess(255.0, (0.5,), (0.25,)))
    batch = Batch.fetched(torch.tensor([1]), inputs.raw([1]), torch.tensor([1]), "cpu", inputs)
    assert inputs.raw([1]).dtype == torch.uint8  # bytes travel
    assert batch.x.dtype == torch.float32
    assert torch.allclose(batch.x, (x[1:].float() / 255 - 0.5) / 0.25)
