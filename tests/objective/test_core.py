import pytest
import torch

from kdistill.models.adapters import build_adapters
from kdistill.objective.core import build_objective


def test_weighted_sum_of_named_terms():
    objective = build_objective([
        {"loss": "kd", "weight": 2.0, "args": {"temperature": 1.0, "alpha": 1.0}},
        {"loss": "ce", "weight": 0.5},
        {"loss": "hint", "weight": 0.0, "student": "a", "teacher": "b"},  # switched off
    ])
    s = {"logits": torch.tensor([[0.0, 0.0]])}
    t = {"logits": torch.tensor([[1.0, 0.0]])}
    total, terms = objective(s, t, torch.tensor([0]))
    assert set(terms) == {"kd", "ce"}
    assert total.item() == pytest.approx(2 * terms["kd"].item() + 0.5 * terms["ce"].item())


def test_labels_only_loss_reads_no_teacher():
    objective = build_objective([{"loss": "ce"}])
    assert not objective.uses_teacher
    total, _ = objective({"logits": torch.zeros(1, 3)}, None, torch.tensor([2]))
    assert total.item() > 0


def test_gradients_reach_student_and_adapter_not_teacher():
    objective = build_objective([{"loss": "hint", "student": "s", "teacher": "t"}])
    student_feat = torch.randn(2, 4, 3, 3, requires_grad=True)
    teacher_feat = torch.randn(2, 8, 6, 6, requires_grad=True)
    objective.adapters = build_adapters([("s", "t")], {"s": student_feat}, {"t": teacher_feat})
    total, _ = objective({"s": student_feat, "logits": None}, {"t": teacher_feat.detach()}, None)
    total.backward()
    assert student_feat.grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.adapters.parameters())
    assert teacher_feat.grad is None


def test_a_list_of_taps_feeds_a_tuple_and_index_reaches_losses_that_want_it():
    from torch import nn

    from kdistill.losses.registry import LOSSES, Contract, register

    @register("_pairs_for_test", Contract(adapt=False, index=True))
    class Pairs(nn.Module):
        def forward(self, student, teacher, target=None, index=None):
            assert isinstance(student, tuple) and len(student) == 2 and index.tolist() == [4, 7]
            return student[0].sum() + student[1].sum() - teacher[0].sum()

    try:
        objective = build_objective([{"loss": "_pairs_for_test", "student": ["a", "b"], "teacher": ["c", "d"]}])
        assert objective.taps() == (["a", "b"], ["c", "d"]) and objective.feature_pairs() == []  # adapt = False
        s = {"a": torch.ones(2, 3), "b": torch.ones(2, 3)}
        t = {"c": torch.ones(2, 3), "d": torch.zeros(2, 3)}
        total, _ = objective(s, t, None, torch.tensor([4, 7]))
        assert total.item() == 6.0
    finally:
        del LOSSES["_pairs_for_test"]
