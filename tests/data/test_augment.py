"""Shift-and-flip augmentation: views worked out by hand, drawn parameters in range and
reproducible, identity when nothing moves; a stage's ``Augment`` draws the same views from the
same generator, random or among a disk cache's."""

import pytest
import torch

from kdistill.data.augment import Augment, draw_shift_flip, random_shift_flip, shift_flip

X = torch.arange(16.0).view(1, 1, 4, 4)
# [[ 0,  1,  2,  3],
#  [ 4,  5,  6,  7],
#  [ 8,  9, 10, 11],
#  [12, 13, 14, 15]]


def view(dy, dx, flipped, shift=1, x=X):
    return shift_flip(x, torch.tensor([[dy, dx, flipped]], dtype=torch.int16), shift)[0, 0]


def test_shift_by_hand():
    # out[r, c] = x[r + dy - shift, c + dx - shift], zero outside the image
    assert torch.equal(view(0, 1, 0), torch.tensor([[0.0, 0, 0, 0], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]))
    assert torch.equal(view(1, 2, 0), torch.tensor([[1.0, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0], [13, 14, 15, 0]]))
    assert torch.equal(view(2, 0, 0), torch.tensor([[0.0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14], [0, 0, 0, 0]]))
    assert torch.equal(view(4, 4, 0, shift=2), torch.tensor([[10.0, 11, 0, 0], [14, 15, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))


def test_flip_by_hand_after_the_shift():
    assert torch.equal(view(1, 1, 1), X[0, 0].flip(-1))
    assert torch.equal(view(1, 2, 1), torch.tensor([[0.0, 3, 2, 1], [0, 7, 6, 5], [0, 11, 10, 9], [0, 15, 14, 13]]))
    assert torch.equal(view(0, 0, 1, shift=0), X[0, 0].flip(-1))


def test_each_image_gets_its_own_view_and_all_its_channels_the_same():
    x = torch.stack([X[0].repeat(3, 1, 1), 100 + X[0].repeat(3, 1, 1)])  # (2, 3, 4, 4)
    params = torch.tensor([[0, 1, 0], [1, 2, 1]], dtype=torch.int16)
    out = shift_flip(x, params, 1)
    assert out.shape == (2, 3, 4, 4)
    for c in range(3):
        assert torch.equal(out[0, c], view(0, 1, 0))
        assert torch.equal(out[1, c], torch.tensor([[0.0, 103, 102, 101], [0, 107, 106, 105],
                                                     [0, 111, 110, 109], [0, 115, 114, 113]]))


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_no_shift_and_no_flip_is_the_identity(shift):
    x = torch.randn(5, 2, 6, 7)
    params = torch.zeros(5, 3, dtype=torch.int16)
    params[:, :2] = shift  # offset shift: no translation
    assert torch.equal(shift_flip(x, params, shift), x)
    assert torch.equal(random_shift_flip(x, shift=0, flip=False), x)


def test_drawn_parameters_are_in_range_and_both_ways_flipped():
    params = draw_shift_flip(2000, shift=2, generator=torch.Generator().manual_seed(0))
    assert params.shape == (2000, 3) and params.dtype == torch.int16
    assert set(params[:, 0].tolist()) == set(params[:, 1].tolist()) == {0, 1, 2, 3, 4}
    assert set(params[:, 2].tolist()) == {0, 1}
    assert 900 < int(params[:, 2].sum()) < 1100


def test_drawing_with_nothing_to_draw():
    assert torch.equal(draw_shift_flip(3, shift=0, flip=False), torch.zeros(3, 3, dtype=torch.int16))
    no_flip = draw_shift_flip(50, shift=1, flip=False)
    assert (no_flip[:, 2] == 0).all() and no_flip[:, :2].min() >= 0 and no_flip[:, :2].max() <= 2
    no_shift = draw_shift_flip(50, shift=0)
    assert (no_shift[:, :2] == 0).all()


def test_a_seeded_generator_repeats_the_draw():
    a = draw_shift_flip(64, 3, generator=torch.Generator().manual_seed(7))
    b = draw_shift_flip(64, 3, generator=torch.Generator().manual_seed(7))
    c = draw_shift_flip(64, 3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the global generator is not used when one is given
    torch.manual_seed(0)
    before = torch.get_rng_state()
    draw_shift_flip(64, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_random_shift_flip_keeps_shape_and_dtype_and_is_the_drawn_view(dtype):
    x = (torch.rand(6, 2, 5, 5) * 200).to(dtype)
    out = random_shift_flip(x, shift=2, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == dtype
    params = draw_shift_flip(6, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, shift_flip(x, params, 2))


# ---- Augment: a stage's view of each batch ----------------------------------------------------

def test_augment_without_shift_or_flip_is_the_batch_and_draws_nothing():
    x, index, generator = torch.rand(4, 1, 5, 5), torch.arange(4), torch.Generator().manual_seed(0)
    before = generator.get_state()
    for augment in (Augment(), Augment(0, False, views=torch.zeros(4, 1, 3, dtype=torch.int16))):
        xb, view = augment(x, index, generator)
        assert not augment.random and xb is x and view is None
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("shift, flip", [(2, True), (1, False), (0, True)])
def test_augment_at_random_is_random_shift_flip_from_the_same_generator(shift, flip):
    x, index = torch.rand(6, 2, 5, 5), torch.tensor([5, 0, 3, 3, 1, 2])
    ours, theirs = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    xb, view = Augment(shift, flip)(x, index, ours)
    assert view is None and torch.equal(xb, random_shift_flip(x, shift, flip, theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())  # the same draws, no more


def test_augment_with_cached_views_shows_one_of_each_samples_views():
    views = draw_shift_flip(10 * 3, 2, generator=torch.Generator().manual_seed(1)).view(10, 3, 3)  # (N, V, 3)
    x, index = torch.rand(5, 1, 6, 6), torch.tensor([9, 2, 5, 0, 2])
    generator = torch.Generator().manual_seed(2)
    xb, view = Augment(2, True, views=views)(x, index, generator)
    # one view drawn per sample from the generator, then that view's shift and flip
    assert torch.equal(view, torch.randint(3, (5,), generator=torch.Generator().manual_seed(2)))
    assert torch.equal(xb, shift_flip(x, views[index, view], 2))
    assert not torch.equal(xb, random_shift_flip(x, 2, True, torch.Generator().manual_seed(2)))
