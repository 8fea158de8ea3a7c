"""Views of a source (kdistill/data/samples.py): index sets, prepared batch by batch."""

import torch

from kdistill.data import ArraySource, Preprocess
from kdistill.data.samples import Inputs, Samples, as_inputs, fingerprint_of, pick, take


def _bytes():
    x = torch.arange(40, dtype=torch.uint8).reshape(10, 1, 2, 2)
    return ArraySource(x, torch.arange(10) % 2, scale=255.0)


def test_inputs_index_like_a_tensor_and_prepare_what_they_fetch():
    source = _bytes()
    inputs = Inputs(source, torch.tensor([7, 2, 5]), Preprocess(255.0))
    assert len(inputs) == 3 and inputs.shape == (3, 1, 2, 2)
    assert inputs.raw(slice(0, 2)).dtype == torch.uint8
    assert torch.equal(inputs[:], source.x[[7, 2, 5]].float() / 255)
    assert torch.equal(inputs[1], source.x[2].float() / 255)
    assert torch.equal(inputs[torch.tensor([2, 0])], source.x[[5, 7]].float() / 255)
    assert torch.equal(take(inputs, slice(1, 3), "cpu"), inputs[1:3])
    assert torch.equal(pick(inputs, torch.tensor([2]))[:], inputs[2:3])  # a view of a view


def test_the_fingerprint_names_source_rows_and_preparation():
    source = _bytes()
    a = Inputs(source, torch.tensor([1, 2]), Preprocess(255.0))
    assert fingerprint_of(a) == Inputs(source, torch.tensor([1, 2]), Preprocess(255.0)).fingerprint()
    assert a.fingerprint() != Inputs(source, torch.tensor([2, 1]), Preprocess(255.0)).fingerprint()
    assert a.fingerprint() != Inputs(source, torch.tensor([1, 2]), Preprocess(255.0, (0.5,), (1.0,))).fingerprint()
    assert a.to("cpu").fingerprint() == a.fingerprint()  # a copy of the same samples keys the same outputs
    assert torch.equal(a.to("cpu")[:], a[:])


def test_samples_carry_their_own_labels_and_subset_as_views():
    source = _bytes()
    samples = Samples(source, torch.tensor([3, 4, 5]), torch.tensor([-1, -1, -1]))
    assert samples.y.tolist() == [-1, -1, -1] and source.y[3] == 1  # withheld here, kept in the source
    part = samples.subset(torch.tensor([2]))
    assert part.index.tolist() == [5] and part.source is source
    assert Samples(source).y.tolist() == source.y.tolist()


def test_a_tensor_becomes_inputs_of_itself():
    x = torch.randn(4, 3)
    assert torch.equal(as_inputs(x)[:], x) and as_inputs(as_inputs(x)) is not None
