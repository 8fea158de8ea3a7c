"""kdistill.objective.build: one objective per stage, adapters shared by (student tap, teacher tap),
none for losses that compare summaries, and one-line errors found by the dry pass."""

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.adapters import ConvAdapter, adapter_key
from kdistill.models.zoo import build_model
from kdistill.objective.build import build_providers, build_stage_objectives
from kdistill.objective.core import Objective
from kdistill.objective.features import FeatureProvider
from kdistill.recipe import load_recipe

TEACHER = {"model": "cnn", "args": {"channels": [8, 16], "hidden": 16, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}


def _recipe(stages, student=STUDENT, **extra):
    return load_recipe({"name": "t", "device": "cpu", "data": {"source": "digits", "labelled": 50},
                        "teacher": TEACHER, "student": student, "stages": stages, **extra})


def _models(recipe):
    return {role: build_model(spec.model, **spec.args)
            for role, spec in (("teacher", recipe.teacher), ("student", recipe.student))}


SAMPLE = torch.randn(2, 1, 8, 8)


def test_one_objective_per_stage_with_its_terms():
    recipe = _recipe([
        {"name": "teacher", "train": "teacher", "data": "full"},
        {"name": "distil", "data": "transfer",
         "loss": [{"loss": "kd", "args": {"temperature": 4}}, {"loss": "hint", "weight": 0.5,
                                                                "student": "stages.1", "teacher": "stages.1"}]},
        {"name": "finetune", "loss": [{"loss": "ce"}]},
    ])
    objectives = build_stage_objectives(recipe, _models(recipe), SAMPLE)
    assert list(objectives) == ["teacher", "distil", "finetune"]
    assert all(isinstance(o, Objective) for o in objectives.values())
    assert [t.name for t in objectives["teacher"].terms] == ["ce"]  # the default loss
    distil = objectives["distil"]
    assert [(t.name, t.weight, t.student, t.teacher) for t in distil.terms] == [
        ("kd", 1.0, "logits", "logits"), ("hint", 0.5, "stages.1", "stages.1")]
    # student stages.1 is (8, 4, 4), the teacher's (16, 4, 4): a 1x1 conv adapter; logits match: identity
    assert isinstance(distil.adapters[adapter_key("stages.1", "stages.1")], ConvAdapter)
    assert isinstance(distil.adapters[adapter_key("logits", "logits")], nn.Identity)
    assert len(objectives["finetune"].adapters) == 0 and not objectives["finetune"].uses_teacher


def test_a_stage_training_the_teacher_gets_no_adapters():
    recipe = _recipe([{"name": "teacher", "train": "teacher", "data": "full",
                       "loss": [{"loss": "kd"}]}])  # no teacher to learn from while it trains
    objectives = build_stage_objectives(recipe, _models(recipe), SAMPLE)
    assert len(objectives["teacher"].adapters) == 0


def test_two_stages_with_the_same_tap_pair_share_one_adapter():
    hint = {"loss": "hint", "student": "stages.1", "teacher": "stages.1"}
    recipe = _recipe([{"name": "a", "data": "transfer", "loss": [hint]},
                      {"name": "b", "data": "transfer", "loss": [hint, {"loss": "ce"}]},
                      {"name": "c", "data": "transfer",
                       "loss": [{"loss": "hint", "student": "stages.1", "teacher": "stages.0"}]}])
    objectives = build_stage_objectives(recipe, _models(recipe), SAMPLE)
    key = adapter_key("stages.1", "stages.1")
    assert objectives["a"].adapters[key] is objectives["b"].adapters[key]
    other = objectives["c"].adapters[adapter_key("stages.1", "stages.0")]
    # the teacher's stages.0 is (8, 4, 4) like the student's stages.1: no learned map needed
    assert isinstance(other, nn.Identity)
    assert key not in objectives["c"].adapters


def test_no_adapter_for_a_loss_that_does_not_adapt():
    # attention transfer compares spatial maps, so 4 student and 8 teacher channels need no adapter
    recipe = _recipe([{"name": "a", "data": "transfer",
                       "loss": [{"loss": "at", "student": "stages.0", "teacher": "stages.0"}]}])
    objective = build_stage_objectives(recipe, _models(recipe), SAMPLE)["a"]
    assert objective.feature_pairs() == []
    assert len(objective.adapters) == 0
    models = _models(recipe)
    s = models["student"].stages[0](SAMPLE)
    t = models["teacher"].stages[0](SAMPLE)
    total, values = objective({"stages.0": s}, {"stages.0": t}, None)
    assert torch.isfinite(total) and set(values) == {"at"}


def test_kd_with_different_class_counts_fails_in_one_line():
    student = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8, "num_classes": 7}}
    recipe = _recipe([{"name": "distil", "data": "transfer", "loss": [{"loss": "kd"}]}], student=student)
    with pytest.raises(KDistillError) as info:
        build_stage_objectives(recipe, _models(recipe), SAMPLE)
    message = str(info.value)
    assert "\n" not in message
    assert "'kd'" in message and "outputs 10 classes but the student 7" in message
    assert "num_classes=10" in message


def test_a_bad_tap_name_fails_before_training():
    recipe = _recipe([{"name": "a", "data": "transfer",
                       "loss": [{"loss": "hint", "student": "stages.7", "teacher": "stages.1"}]}])
    with pytest.raises(KDistillError, match="student: no module named 'stages.7'"):
        build_stage_objectives(recipe, _models(recipe), SAMPLE)


def test_build_providers_without_an_embedding_section_is_empty():
    recipe = _recipe([{"name": "a", "data": "transfer", "loss": [{"loss": "kd"}]}])
    # nothing is fitted, so no splits are needed
    assert build_providers(recipe, _models(recipe), None, torch.device("cpu"), SAMPLE, 10) == []


class _Provider(FeatureProvider):
    """A stand-in provider: the teacher feature ``emb`` (head.2 through a fixed map) and its own
    adapter for (head.0, emb)."""

    def __init__(self):
        super().__init__()
        self.map = nn.Linear(16, 4)
        self.adapter = nn.Linear(128, 4)

    def teacher_features(self):
        return {"emb": ("head.2", self.map)}

    def adapters(self):
        return {adapter_key("head.0", "emb"): self.adapter}


def test_objectives_read_provider_features_and_share_the_providers_adapter():
    recipe = _recipe([{"name": "a", "data": "transfer",
                       "loss": [{"loss": "hint", "student": "head.0", "teacher": "emb"}]},
                      {"name": "b", "data": "transfer", "loss": [{"loss": "kd"}]}])
    provider = _Provider()
    objectives = build_stage_objectives(recipe, _models(recipe), SAMPLE, [provider])
    a, b = objectives["a"], objectives["b"]
    assert a.providers == [provider] and b.providers == []  # b reads none of its features
    assert a.teacher_derived == {"emb": ("head.2", provider.map)}
    assert a.adapters[adapter_key("head.0", "emb")] is provider.adapter
