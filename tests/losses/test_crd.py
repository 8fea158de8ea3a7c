import math

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.losses import build_loss
from kdistill.losses.crd import ContrastiveRepresentationDistillation


def identity_heads(crd):
    """Give a 2-wide crd identity heads (after its first call has shaped them)."""
    with torch.no_grad():
        for name in ("student", "teacher"):
            getattr(crd, f"{name}_weight").copy_(torch.eye(2))
            getattr(crd, f"{name}_bias").zero_()


def test_value_by_hand():
    # identity heads: s = (.6, .8), (1, 0); t = (0, 1), (r, r) with r = 1/sqrt(2)
    # two bank rows, so each anchor's only negative is the other row (num_negatives clamps to 1)
    crd = build_loss("crd", feat_dim=2, num_negatives=5, temperature=0.5)
    student, teacher = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    index = torch.tensor([0, 1])
    crd(student, teacher, index=index)  # shapes the heads and the banks
    identity_heads(crd)
    crd.student_bank.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    crd.teacher_bank.copy_(torch.tensor([[0.6, -0.8], [-1.0, 0.0]]))

    r, tau = 1 / math.sqrt(2), 0.5

    def nce(positive, negative):  # -log softmax of the positive among (positive, negative)
        return -math.log(math.exp(positive / tau) / (math.exp(positive / tau) + math.exp(negative / tau)))

    # student anchors against T: s0.t0 = .8 vs s0.T1 = -.6; s1.t1 = r vs s1.T0 = .6
    # teacher anchors against S: t0.s0 = .8 vs t0.S1 = 1;   t1.s1 = r vs t1.S0 = r
    l_student = (nce(0.8, -0.6) + nce(r, 0.6)) / 2
    l_teacher = (nce(0.8, 1.0) + nce(r, r)) / 2
    loss = crd(student, teacher, index=index)
    assert loss.item() == pytest.approx((l_student + l_teacher) / 2, abs=1e-5)

    # momentum 0.5: row = normalise(.5 * row + .5 * embedding)
    expected_s = torch.tensor([[0.8, 0.4], [0.5, 0.5]])
    expected_t = torch.tensor([[0.3, 0.1], [0.5 * (r - 1), 0.5 * r]])
    assert torch.allclose(crd.student_bank, torch.nn.functional.normalize(expected_s, dim=1), atol=1e-6)
    assert torch.allclose(crd.teacher_bank, torch.nn.functional.normalize(expected_t, dim=1), atol=1e-6)


def test_many_negatives_from_one_row_by_hand():
    # one anchor at index 0, bank rows 1 and 2 equal: whichever rows are drawn, both negatives
    # score the same, so loss = -log(e^{p/tau} / (e^{p/tau} + 2 e^{n/tau})) per direction
    crd = build_loss("crd", feat_dim=2, num_negatives=2, temperature=0.5)
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    crd(student, teacher, index=torch.tensor([2]))  # three rows
    identity_heads(crd)
    crd.student_bank.copy_(torch.tensor([[9.0, 9.0], [1.0, 0.0], [1.0, 0.0]]))
    crd.teacher_bank.copy_(torch.tensor([[9.0, 9.0], [0.0, 1.0], [0.0, 1.0]]))
    # s.t = 0; s.T[1] = 0; t.S[1] = 0: every logit is 0, so each direction gives ln 3
    loss = crd(student, teacher, index=torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(3), abs=1e-5)


def test_more_negatives_than_bank_rows_clamp_to_the_bank():
    crd = build_loss("crd", feat_dim=8)  # num_negatives 4096 clamps to bank size - 1 = 3
    loss = crd(torch.randn(4, 3, 2, 2), torch.randn(4, 5), index=torch.arange(4))
    assert torch.isfinite(loss) and loss.item() > 0


def test_heads_take_the_flattened_widths():
    crd = build_loss("crd", feat_dim=8, num_negatives=3)
    crd(torch.randn(4, 3, 2, 2), torch.randn(4, 5), index=torch.arange(4))
    assert crd.student_weight.shape == (8, 12) and crd.teacher_weight.shape == (8, 5)
    assert crd.student_bias.shape == crd.teacher_bias.shape == (8,)


def test_bank_grows_and_only_rows_at_index_change():
    crd = build_loss("crd", feat_dim=4, num_negatives=2)
    crd(torch.randn(2, 3), torch.randn(2, 3), index=torch.tensor([0, 1]))
    assert crd.student_bank.shape == crd.teacher_bank.shape == (2, 4)
    first = crd.student_bank.clone()
    crd(torch.randn(2, 3), torch.randn(2, 3), index=torch.tensor([5, 2]))
    assert crd.student_bank.shape == crd.teacher_bank.shape == (6, 4)
    assert torch.equal(crd.student_bank[:2], first)  # growing keeps the old rows
    assert torch.allclose(crd.teacher_bank.norm(dim=1), torch.ones(6))  # new rows are unit vectors

    before = {n: getattr(crd, n).clone() for n in ("student_bank", "teacher_bank")}
    crd(torch.randn(2, 3), torch.randn(2, 3), index=torch.tensor([4, 1]))
    for name, old in before.items():
        new = getattr(crd, name)
        changed = (new != old).any(dim=1)
        assert changed.tolist() == [False, True, False, False, True, False], name


def test_eval_mode_leaves_banks_alone():
    crd = build_loss("crd", feat_dim=4, num_negatives=2)
    crd(torch.randn(3, 3), torch.randn(3, 3), index=torch.arange(3))
    before = crd.student_bank.clone()
    crd.eval()
    crd(torch.randn(3, 3), torch.randn(3, 3), index=torch.arange(3))
    assert torch.equal(crd.student_bank, before)


def test_same_seed_same_loss():
    losses = []
    for _ in range(2):
        torch.manual_seed(1)  # the heads' initialisation
        feats = torch.randn(4, 3), torch.randn(4, 3)
        crd = build_loss("crd", feat_dim=4, num_negatives=2, seed=7)
        losses.append([crd(*feats, index=torch.arange(4)).item() for _ in range(3)])
    assert losses[0] == losses[1]


@pytest.mark.parametrize("bad", [{"num_negatives": 0}, {"num_negatives": -1}, {"temperature": 0.0},
                                 {"momentum": 1.0}, {"feat_dim": 0}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        ContrastiveRepresentationDistillation(**bad)
    with pytest.raises(KDistillError):
        build_loss("crd", **bad)


def test_needs_index():
    with pytest.raises(KDistillError, match="index"):
        build_loss("crd")(torch.randn(2, 3), torch.randn(2, 3))


def test_optimizer_built_before_the_first_call_trains_the_heads():
    crd = build_loss("crd", feat_dim=4, num_negatives=2)
    optimizer = torch.optim.SGD(crd.parameters(), lr=0.1)  # the heads are still uninitialised here
    crd(torch.randn(3, 5), torch.randn(3, 6), index=torch.arange(3)).backward()
    before = {n: p.detach().clone() for n, p in crd.named_parameters()}
    optimizer.step()
    for name, p in crd.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


def test_state_holds_banks_and_loads_into_a_fresh_module():
    crd = build_loss("crd", feat_dim=4, num_negatives=2)
    crd(torch.randn(3, 5), torch.randn(3, 6), index=torch.tensor([0, 7, 2]))
    state = crd.state_dict()
    assert state["student_bank"].shape == state["teacher_bank"].shape == (8, 4)

    fresh = build_loss("crd", feat_dim=4, num_negatives=2)
    fresh.load_state_dict(state)
    for name, value in state.items():
        if name != "_extra_state":  # the generator of negatives, compared below
            assert torch.equal(getattr(fresh, name), value), name
    fresh(torch.randn(3, 5), torch.randn(3, 6), index=torch.tensor([0, 1, 2]))  # no re-initialisation
    assert torch.equal(fresh.student_weight, state["student_weight"])

    # the generator of negatives resumes where it was: the next draws are the same
    again = build_loss("crd", feat_dim=4, num_negatives=2)
    again.load_state_dict(crd.state_dict())
    s, t, i = torch.randn(3, 5), torch.randn(3, 6), torch.tensor([1, 3, 5])
    assert torch.equal(again(s, t, index=i), crd(s, t, index=i))

    used = build_loss("crd", feat_dim=4, num_negatives=2)
    used(torch.randn(2, 5), torch.randn(2, 6), index=torch.tensor([0, 1]))  # smaller banks
    used.load_state_dict(state)
    assert torch.equal(used.teacher_bank, state["teacher_bank"])
