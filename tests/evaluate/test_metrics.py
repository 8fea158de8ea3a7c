import math

import pytest
import torch
from torch import nn

from kdistill.evaluate.metrics import classification_metrics, cpu_latency, expected_calibration_error


def test_ece_by_hand():
    # confidences 0.8 (correct) and 0.6 (wrong) in separate bins: 0.5*|1-0.8| + 0.5*|0-0.6| = 0.4
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.4)


def test_accuracy_agreement_and_kl():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1]), teacher)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["agreement"] == pytest.approx(2 / 3)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    kl_row = float((p * (p.log() - p.flip(0).log())).sum())  # only the second row differs
    assert m["kl_to_teacher"] == pytest.approx(kl_row / 3, rel=1e-5)
    assert classification_metrics(teacher, torch.zeros(3, dtype=torch.long), teacher)["kl_to_teacher"] == 0


def test_latency_is_per_sample_and_positive():
    lat = cpu_latency(nn.Linear(4, 2), torch.randn(1, 4), batch_sizes=(1, 8), min_seconds=0.01)
    assert set(lat) == {"latency_ms_b1", "latency_ms_b8"} and all(v > 0 and math.isfinite(v) for v in lat.values())
