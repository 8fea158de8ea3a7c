import torch

from kdistill.losses import build_loss


def test_value_by_hand():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert build_loss("hint")(student, torch.zeros(2, 2)).item() == 7.5  # (1 + 4 + 9 + 16) / 4


def test_mean_over_every_element_of_a_map():
    # a difference of 2 everywhere in a (B, C, H, W) map: squared 4, averaged over all elements
    assert build_loss("hint")(torch.full((2, 3, 4, 4), 2.0), torch.zeros(2, 3, 4, 4)).item() == 4.0


def test_normalized_is_the_error_relative_to_the_teachers_mean_square():
    teacher = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # mean square 25 / 4
    student = teacher + torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # squared error 2 / 4
    assert abs(build_loss("hint", normalize=True)(student, teacher).item() - 2 / 25) < 1e-7
    # scale-free: the same relative error at 100x the scale
    assert abs(build_loss("hint", normalize=True)(100 * student, 100 * teacher).item() - 2 / 25) < 1e-6
    assert build_loss("hint", normalize=True)(torch.zeros(2, 2), teacher).item() == 1.0


def test_normalized_gradient_is_the_plain_one_over_the_teachers_mean_square():
    teacher = torch.tensor([[3.0, 4.0]])
    student = torch.tensor([[1.0, 1.0]], requires_grad=True)
    build_loss("hint", normalize=True)(student, teacher).backward()
    assert torch.allclose(student.grad, 2 * (student.detach() - teacher) / 2 / 12.5)
