import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss

# probabilities as logits = log p (tau = 1 gives them back). Each row is a permutation of
# (1/2, 1/3, 1/6), mean 1/3.
TEACHER_P = torch.tensor([[1 / 2, 1 / 3, 1 / 6], [1 / 3, 1 / 6, 1 / 2]])
STUDENT_P = torch.tensor([[1 / 6, 1 / 3, 1 / 2], [1 / 2, 1 / 6, 1 / 3]])


def test_value_by_hand():
    # inter, row 1: centred t = (1/6, 0, -1/6), s = (-1/6, 0, 1/6): rho = -1, d = 2
    #        row 2: centred t = (0, -1/6, 1/6), s = (1/6, -1/6, 0): rho = (1/36) / (2/36) = 1/2, d = 1/2
    #        L_inter = (2 + 1/2) / 2 = 5/4
    # intra, two samples per class, so rho = +-1: class 0 t (1/2 -> 1/3) falls, s (1/6 -> 1/2) rises: d = 2;
    #        class 1 both fall: d = 0; class 2 t rises, s falls: d = 2. L_intra = 4/3
    # loss = 5/4 + 4/3 = 31/12
    loss = build_loss("dist")(STUDENT_P.log(), TEACHER_P.log())
    assert loss.item() == pytest.approx(31 / 12, abs=1e-5)


def test_weights_and_temperature_squared():
    dist = build_loss("dist", beta=2.0, gamma=0.5, tau=2.0)
    # doubled logits at tau = 2 give the same probabilities; tau^2 (2 * 5/4 + 0.5 * 4/3) = 38/3
    assert dist(2 * STUDENT_P.log(), 2 * TEACHER_P.log()).item() == pytest.approx(38 / 3, abs=1e-4)


def test_batch_of_one_has_no_intra_class_term():
    one = torch.randn(1, 5)  # no correlation across one sample: L_intra is left out, not NaN
    assert build_loss("dist")(one, one.clone()).abs().item() < 1e-5


def test_invariant_to_adding_a_constant_to_a_samples_logits():
    dist = build_loss("dist")
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    shifted = student + torch.tensor([[3.0], [-2.0], [10.0], [0.5]])
    assert dist(shifted, teacher).item() == pytest.approx(dist(student, teacher).item(), abs=1e-5)


def test_bad_arguments_name_the_loss():
    with pytest.raises(KDistillError, match="dist"):
        build_loss("dist", tau=-1.0)
