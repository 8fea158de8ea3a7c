"""BatchLoader (kdistill/data/loader.py): the batches the loop asks for, in its order, fetched in
the main process or by DataLoader workers alike."""

import pytest
import torch

from kdistill.data.loader import BatchLoader


def _data(n=50):
    return torch.arange(n * 3, dtype=torch.float32).reshape(n, 3), torch.arange(n) % 7


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_in_the_order_asked_with_their_rows(workers):
    x, y = _data()
    loader = BatchLoader(x, y, workers=workers)
    batches = list(torch.randperm(50, generator=torch.Generator().manual_seed(0)).split(8))
    got = list(loader.epoch(batches))
    assert len(got) == len(batches)
    for want, (index, xb, yb) in zip(batches, got):
        assert torch.equal(index, want) and torch.equal(xb, x[want]) and torch.equal(yb, y[want])
    loader.close()


def test_workers_persist_across_epochs_and_take_each_epochs_order():
    x, y = _data()
    loader = BatchLoader(x, y, workers=2, prefetch=1)
    for seed in (1, 2, 3):
        batches = list(torch.randperm(50, generator=torch.Generator().manual_seed(seed)).split(16))
        assert [index.tolist() for index, _, _ in loader.epoch(batches)] == [b.tolist() for b in batches]
    loader.close()


def test_starting_workers_draws_nothing_from_the_global_rng():
    x, y = _data()
    loader = BatchLoader(x, y, workers=2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(loader.epoch(list(torch.arange(50).split(10))))
    assert torch.equal(torch.rand(3), expected)  # dropout masks after it are those of 0 workers
    loader.close()


def test_a_workers_error_reaches_the_user_as_one_line():
    from kdistill.data import ArraySource
    from kdistill.data.samples import Inputs
    from kdistill.errors import KDistillError

    class Broken(ArraySource):
        def fetch(self, index, view=None):
            raise KDistillError("image_folder: cannot decode /tmp/x.jpg; replace or drop it.")

    source = Broken(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    loader = BatchLoader(Inputs(source), source.y, workers=1)
    with pytest.raises(KDistillError) as caught:
        list(loader.epoch([torch.tensor([0, 1])]))
    assert str(caught.value) == "image_folder: cannot decode /tmp/x.jpg; replace or drop it."
    loader.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "nice"), reason="Unix scheduling priorities")
@pytest.mark.parametrize("nice", [0, 7])
def test_workers_run_at_a_lower_priority_than_the_training_process(nice):
    """Each worker's niceness is the main process's plus ``nice``; the main process is untouched."""
    import os

    from kdistill.data import ArraySource
    from kdistill.data.samples import Inputs

    class Niceness(ArraySource):
        def fetch(self, index, view=None):
            return torch.full((len(index), 1), float(os.nice(0)))

    base = os.nice(0)
    source = Niceness(torch.zeros(6, 1), torch.zeros(6, dtype=torch.long))
    loader = BatchLoader(Inputs(source), source.y, workers=2, nice=nice)
    seen = {float(v) for _, xb, _ in loader.epoch(list(torch.arange(6).split(2))) for v in xb.flatten()}
    loader.close()
    assert seen == {float(min(base + nice, 19))} and os.nice(0) == base
