"""kdistill.pipeline: the models, providers and objectives a recipe asks for, the teacher frozen
or trainable as its stages say, the user's own modules, the device, and students cut from a teacher."""

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.zoo import CNN, build_model
from kdistill.objective.shallow import ShallowSpace
from kdistill.pipeline import build_pipeline, cut_student, resolve_device
from kdistill.recipe import SubnetSpec, load_recipe

TEACHER = {"model": "cnn", "args": {"channels": [8, 16], "hidden": 16, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}
TRAIN_TEACHER = {"name": "teacher", "train": "teacher", "data": "full", "epochs": 1}
DISTIL = {"name": "distil", "data": "transfer", "loss": [{"loss": "kd"}]}


def _recipe(stages, **extra):
    tree = {"name": "p", "device": "cpu", "data": {"source": "digits", "labelled": 50},
            "teacher": TEACHER, "student": STUDENT, "stages": stages}
    return load_recipe({**tree, **extra})


def test_models_objectives_and_providers_as_the_recipe_says():
    recipe = _recipe([TRAIN_TEACHER, {"name": "baseline", "train": "baseline"}, DISTIL])
    p = build_pipeline(recipe)
    assert p.recipe is recipe and p.device == torch.device("cpu")
    assert set(p.models) == {"teacher", "student", "baseline"}
    assert all(isinstance(m, CNN) for m in p.models.values())
    assert p.models["student"].stages[0][0].out_channels == 4 and p.models["teacher"].stages[0][0].out_channels == 8
    # the baseline: the student's architecture from the student's initial weights, a separate copy
    baseline, student = p.models["baseline"], p.models["student"]
    assert baseline is not student
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in baseline.state_dict().items())
    assert list(p.objectives) == ["teacher", "baseline", "distil"]
    assert [t.name for t in p.objectives["distil"].terms] == ["kd"]
    assert p.providers == []
    x, y = p.stage_data(recipe.stages[2])
    assert len(x) == len(p.splits.transfer_set.x) and bool((y == -1).all())


def test_no_baseline_without_a_baseline_stage():
    p = build_pipeline(_recipe([DISTIL]))
    assert set(p.models) == {"teacher", "student"}


def test_an_embedding_section_gives_its_provider():
    recipe = _recipe([{"name": "distil", "data": "transfer",
                       "loss": [{"loss": "embed_mse", "student": "head.0", "teacher": "embedding"}]}],
                     embedding={"teacher": "head.2", "student": "head.0", "dim": 4, "max_samples": 200})
    p = build_pipeline(recipe)
    assert len(p.providers) == 1 and isinstance(p.providers[0], ShallowSpace)
    assert p.objectives["distil"].providers == p.providers


def test_train_false_builds_no_objectives_and_leaves_the_teacher_alone():
    p = build_pipeline(_recipe([DISTIL]), train=False)
    assert p.objectives == {} and p.providers == []
    assert set(p.models) == {"teacher", "student"}
    assert all(q.requires_grad for q in p.models["teacher"].parameters())


def test_teacher_frozen_when_no_stage_trains_it():
    teacher = build_pipeline(_recipe([DISTIL])).models["teacher"]
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(q.requires_grad for q in teacher.parameters())


def test_teacher_trainable_when_a_stage_trains_it():
    teacher = build_pipeline(_recipe([TRAIN_TEACHER, DISTIL])).models["teacher"]
    assert teacher.training and all(q.requires_grad for q in teacher.parameters())


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 10)

    def forward(self, x):
        return self.body(x.flatten(1))


def test_the_users_own_student_and_teacher_are_used():
    student, teacher = Tiny(), build_model("cnn", **TEACHER["args"])
    p = build_pipeline(_recipe([DISTIL, {"name": "baseline", "train": "baseline"}]), teacher=teacher, student=student)
    assert p.models["student"] is student and p.models["teacher"] is teacher
    assert isinstance(p.models["baseline"], Tiny) and p.models["baseline"] is not student


def test_a_student_that_refuses_the_data_fails_in_one_line():
    bad = build_model("mlp", in_features=32, hidden=[8])  # digits are 64 pixels
    with pytest.raises(KDistillError) as info:
        build_pipeline(_recipe([DISTIL]), student=bad)
    assert "\n" not in str(info.value) and "(1, 8, 8)" in str(info.value)


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(KDistillError) as info:
            resolve_device(name)
        assert "\n" not in str(info.value) and repr(name) in str(info.value) and "device=cpu" in str(info.value)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_build_pipeline_asking_for_cuda_without_it_fails(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KDistillError, match="CUDA is not available"):
        build_pipeline(_recipe([DISTIL], device="cuda"))


def _deep_teacher():
    # three stages of 4 channels and no pooling: any subset of them fits the head
    return build_model("cnn", channels=[4, 4, 4], pool_stages=0, image_size=8)


def test_cut_student_keeps_the_chosen_blocks_with_the_teachers_weights():
    teacher = _deep_teacher()
    for q in teacher.parameters():
        q.requires_grad_(False)
    teacher.eval()
    student = cut_student(teacher, SubnetSpec(keep={"stages": [0, 2]}))
    assert len(student.stages) == 2 and len(teacher.stages) == 3  # the teacher is copied, not changed
    assert torch.equal(student.stages[1][0].weight, teacher.stages[2][0].weight)
    assert student.stages[1][0].weight is not teacher.stages[2][0].weight
    assert student.training and all(q.requires_grad for q in student.parameters())
    x = torch.randn(2, 1, 8, 8)
    student.eval()
    with torch.no_grad():
        expected = teacher.head(teacher.stages[2](teacher.stages[0](x)))
        torch.testing.assert_close(student(x), expected)


def test_cut_student_refuses_transformer_only_choices_for_a_cnn():
    with pytest.raises(KDistillError, match="needs a transformer teacher"):
        cut_student(_deep_teacher(), SubnetSpec(layers=2))
    with pytest.raises(KDistillError, match="needs a transformer teacher"):
        cut_student(_deep_teacher(), SubnetSpec(keep=[0, 1]))
    with pytest.raises(KDistillError, match="blocks 0..2"):
        cut_student(_deep_teacher(), SubnetSpec(keep={"stages": [0, 3]}))


def test_a_recipe_student_cut_from_the_teacher():
    teacher = {"model": "cnn", "args": {"channels": [4, 4, 4], "pool_stages": 0, "image_size": 8}}
    recipe = load_recipe({"name": "cut", "device": "cpu", "data": {"source": "digits", "labelled": 50},
                          "teacher": teacher, "student": {"from_teacher": {"keep": {"stages": [0, 2]}}},
                          "stages": [DISTIL]})
    p = build_pipeline(recipe)
    student, teacher = p.models["student"], p.models["teacher"]
    assert len(student.stages) == 2 and len(teacher.stages) == 3
    assert torch.equal(student.stages[1][0].weight, teacher.stages[2][0].weight)
    assert all(q.requires_grad for q in student.parameters())
    assert not any(q.requires_grad for q in teacher.parameters())


def test_prototype_head_has_a_prototype_for_every_training_class():
    from kdistill.data.sklearn_sets import load_digits

    train, test = load_digits()
    keep = test.y != 9  # a small held-out set that happens to lack class 9
    recipe = load_recipe({
        "name": "classes", "device": "cpu", "data": {"source": "custom", "labelled": 100},
        "teacher": TEACHER, "student": STUDENT,
        "embedding": {"teacher": "head.2", "student": "head.0", "dim": 4, "max_samples": 200, "shots": [1]},
        "stages": [{"name": "protos", "loss": [{"loss": "ce", "student": "prototypes"}]}]})
    p = build_pipeline(recipe, data=((train.x, train.y), (test.x[keep], test.y[keep])))
    assert int(p.splits.labelled_set.y.max()) == 9
    assert p.providers[0].head[1].prototypes.shape == (10, 4)


def test_models_without_weights_fit_the_datas_classes_and_channels():
    rgb = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    data = ((rgb, torch.arange(40) % 4), (rgb[:8], torch.arange(8) % 4))
    recipe = load_recipe({"name": "p", "device": "cpu", "data": {"source": "custom", "labelled": 8},
                          "student": STUDENT, "stages": [{"name": "s", "loss": [{"loss": "ce"}]}]})
    p = build_pipeline(recipe, data=data)
    student = p.models["student"]
    assert student.stages[0][0].in_channels == 3  # the recipe named neither
    assert student(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    assert p.splits.labelled_set.x.raw([0]).dtype == torch.uint8  # bytes until the batch
