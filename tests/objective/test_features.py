"""kdistill.objective.features: the weights a term's ``start`` names, and the provider base's defaults."""

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.objective.features import FeatureProvider, StageContext


def _context(**kw):
    model = nn.Linear(2, 1)
    return StageContext(model=model, models={"student": model}, splits=None, device=torch.device("cpu"), **kw)


def test_start_init_is_the_initial_weights():
    initial = {"weight": torch.zeros(1, 2), "bias": torch.zeros(1)}
    context = _context(initial=initial)
    assert context.start_weights("init", "l2_start") is initial


def test_start_stage_is_the_stage_start_when_given():
    start = {"weight": torch.ones(1, 2), "bias": torch.ones(1)}
    assert _context(stage_start=start).start_weights("stage", "l2_start") is start


def test_start_stage_without_a_stage_start_is_a_copy_of_the_model_now():
    context = _context()
    weights = context.start_weights("stage", "l2_start")
    assert set(weights) == {"weight", "bias"}
    torch.testing.assert_close(weights["weight"], context.model.weight.detach())
    with torch.no_grad():
        context.model.weight.add_(1.0)  # training moves the model; the start stays put
    assert not torch.equal(weights["weight"], context.model.weight.detach())
    assert not weights["weight"].requires_grad


def test_start_an_earlier_stage_is_its_end():
    ends = {"distil": {"weight": torch.full((1, 2), 3.0)}, "teacher": {"weight": torch.full((1, 2), 4.0)}}
    context = _context(ends=ends)
    assert context.start_weights("distil", "l2_start") is ends["distil"]
    assert context.start_weights("teacher", "l2_start") is ends["teacher"]


def test_start_unknown_name_fails_naming_the_term_and_the_earlier_stages():
    context = _context(ends={"distil": {}})
    with pytest.raises(KDistillError) as info:
        context.start_weights("later", "pull")
    message = str(info.value)
    assert "'pull'" in message and "'later'" in message and "distil" in message
    assert "\n" not in message


def test_context_defaults():
    context = _context()
    assert context.initial == {} and context.ends == {} and context.stage_start is None
    assert context.teacher_changed is False and context.seed == 0
    assert _context().ends is not context.ends  # no shared mutable default


def test_feature_provider_defaults():
    provider = FeatureProvider()
    assert isinstance(provider, nn.Module)
    assert provider.student_features() == {}
    assert provider.teacher_features() == {}
    assert provider.adapters() == {}
    assert provider.prepare(_context(), {"embedding", "prototypes"}) is False
    assert provider.summary(_context()) == {}
    assert provider.files() == {}
    assert list(provider.parameters()) == []
