"""Model families (kdistill/families.py): how a classifier or an encoder is judged while it trains,
judged at the end and exported. The models here are built by hand with fixed outputs, so every
metric is known in advance."""

import math

import pytest
import torch
from torch import nn

from kdistill.data.sklearn_sets import load_digits
from kdistill.data.splits import Splits
from kdistill.errors import KDistillError
from kdistill.families import FAMILIES, Classifier, Encoder, Family, LanguageModel, family_of
from kdistill.models.ensemble import TeacherEnsemble
from kdistill.recipe import load_recipe
from kdistill.recipe.load import validate
from kdistill.recipe.sources import SOURCES

CPU = torch.device("cpu")
TEACHER = {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}}


def constant(bias: list[float], hidden: int | None = None) -> nn.Module:
    """A digits model (``(N, 1, 8, 8) -> (N, 10)``) whose every output is ``bias``: its weights are 0."""
    layers = [nn.Linear(64, hidden), nn.Linear(hidden, 10)] if hidden else [nn.Linear(64, 10)]
    model = nn.Sequential(nn.Flatten(), *layers)
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()
        layers[-1].bias.copy_(torch.tensor(bias))
    return model


def one_hot(k: int, value: float) -> list[float]:
    return [value if i == k else 0.0 for i in range(10)]


@pytest.fixture(scope="module")
def splits():
    train, test = load_digits()
    return Splits(labelled_set=train, transfer_set=train, val_set=None, test_set=test)


def recipe(*trains: str):
    return load_recipe({"name": "f", "latency": False, "teacher": TEACHER,
                        "stages": [{"name": f"s{i}", "train": t} for i, t in enumerate(trains)]})


def test_the_families_are_the_recipes_tasks():
    served = {task for info in SOURCES.values() for task in info.tasks}  # what the data sources declare
    assert set(FAMILIES) == served == {"classify", "embed", "generate"}
    with pytest.raises(KDistillError, match="^recipe: task: not a model family; use one of classify, embed, "
                                            "generate \\(got 'regress'\\)$"):
        load_recipe({"name": "f", "task": "regress", "stages": [{"name": "s"}]})
    assert type(FAMILIES["classify"]) is Classifier and type(FAMILIES["embed"]) is Encoder
    assert type(FAMILIES["generate"]) is LanguageModel
    assert all(isinstance(f, Family) for f in FAMILIES.values())
    assert family_of(recipe("student")) is FAMILIES["classify"]  # digits: classify, the default
    text = load_recipe({"name": "t", "data": {"source": "csv", "path": "x.csv"}, "stages": [{"name": "s"}]})
    assert family_of(text) is FAMILIES["embed"]
    lm = load_recipe({"name": "t", "data": {"source": "lm_text"}, "stages": [{"name": "s"}]})
    assert family_of(lm) is FAMILIES["generate"] and lm.data.labelled == 0
    unknown = validate({"name": "t", "task": "clasify", "stages": [{"name": "s"}]})  # the schema alone, no checks
    with pytest.raises(KDistillError, match="task: 'clasify' is not a model family; use one of classify, embed"):
        family_of(unknown)


def test_final_metrics_of_a_teacher_a_baseline_and_a_student(splits):
    y = splits.test_set.y
    teacher = constant(one_hot(0, 2.0))  # always says 0, confident
    student = constant(one_hot(1, 1.0), hidden=2)  # always says 1
    baseline = constant(one_hot(0, 1.0))  # always says 0, less sure
    outputs = {}
    result = Classifier().final_metrics(recipe("teacher", "student"), {
        "teacher": teacher, "student": student, "baseline": baseline}, splits, CPU, outputs)
    test = result["test"]
    assert set(result) == {"test"} and set(test) == {"teacher", "baseline", "student"}

    share = {k: (y == k).float().mean().item() for k in (0, 1)}
    p_teacher = math.exp(2) / (math.exp(2) + 9)  # the teacher's confidence in its class
    assert test["teacher"]["accuracy"] == pytest.approx(share[0])
    assert test["teacher"]["ece"] == pytest.approx(abs(share[0] - p_teacher), abs=1e-6)
    assert test["teacher"]["params"] == 64 * 10 + 10
    assert set(test["teacher"]) == {"accuracy", "ece", "params"}  # no agreement with itself; latency: False
    assert set(test["student"]) == {"accuracy", "ece", "agreement", "kl_to_teacher", "params", "params_ratio"}

    p_student = math.exp(1) / (math.exp(1) + 9)
    assert test["student"]["accuracy"] == pytest.approx(share[1])
    assert test["student"]["agreement"] == 0.0
    # KL(teacher || student) of two constant predictions, the same for every input
    t = torch.tensor(one_hot(0, 2.0)).log_softmax(0)
    s = torch.tensor(one_hot(1, 1.0)).log_softmax(0)
    assert test["student"]["kl_to_teacher"] == pytest.approx((t.exp() * (t - s)).sum().item(), rel=1e-5)
    assert test["student"]["ece"] == pytest.approx(abs(share[1] - p_student), abs=1e-6)
    assert test["student"]["params"] == (64 * 2 + 2) + (2 * 10 + 10)
    assert test["student"]["params_ratio"] == 650 / 160

    assert test["baseline"]["agreement"] == 1.0 and test["baseline"]["accuracy"] == pytest.approx(share[0])
    assert "params_ratio" not in test["baseline"]

    # outputs: each model's test logits, for the report
    assert set(outputs) == {"teacher", "baseline", "student"}
    assert outputs["teacher"].shape == (len(y), 10)
    assert torch.equal(outputs["teacher"], torch.tensor(one_hot(0, 2.0)).expand(len(y), 10))
    assert torch.equal(outputs["student"], torch.tensor(one_hot(1, 1.0)).expand(len(y), 10))


def test_a_student_no_stage_trained_is_not_reported(splits):
    teacher, student = constant(one_hot(3, 1.0)), constant(one_hot(3, 1.0))
    test = Classifier().final_metrics(recipe("teacher"), {"teacher": teacher, "student": student}, splits, CPU)["test"]
    assert set(test) == {"teacher"}
    assert test["teacher"]["accuracy"] == pytest.approx((splits.test_set.y == 3).float().mean().item())


def test_a_student_without_a_teacher_has_no_teacher_metrics(splits):
    test = Classifier().final_metrics(recipe("student"), {"student": constant(one_hot(4, 1.0))}, splits, CPU)["test"]
    assert set(test) == {"student"}
    assert not {"agreement", "kl_to_teacher", "params_ratio"} & set(test["student"])


def test_with_several_teachers_the_main_one_is_judged(splits):
    main, extra = constant(one_hot(5, 1.0)), constant(one_hot(6, 1.0), hidden=4)
    outputs = {}
    test = Classifier().final_metrics(recipe("student"), {"teacher": TeacherEnsemble(main, {"extra": extra}),
                                                          "student": constant(one_hot(5, 1.0))},
                                      splits, CPU, outputs)["test"]
    assert test["teacher"]["params"] == 650  # the main teacher alone
    assert test["teacher"]["accuracy"] == pytest.approx((splits.test_set.y == 5).float().mean().item())
    assert test["student"]["agreement"] == 1.0 and test["student"]["params_ratio"] == 1.0
    assert torch.equal(outputs["teacher"], outputs["student"])


def test_epoch_metrics_are_accuracy_words(splits):
    y = splits.test_set.y
    model = constant(one_hot(7, 1.0))
    share = (y == 7).float().mean().item()
    for family in (Classifier(), Encoder()):  # an encoder's teacher, while it trains, is judged as a classifier
        metrics, words = family.epoch_metrics(model, None, splits.test_set, CPU)
        assert metrics["accuracy"] == pytest.approx(share) and "params" not in metrics
        assert words == f"acc {share:.4f}"


def test_an_encoders_epoch_metrics_are_its_cosine_to_the_teacher(splits):
    x = splits.test_set
    student = constant([1.0, 1.0] + [0.0] * 8)
    teacher = constant([1.0, 0.0] + [0.0] * 8)  # 45 degrees from the student
    metrics, words = Encoder().epoch_metrics(student, teacher, x, CPU)
    assert metrics == {"mean_cosine": pytest.approx(1 / math.sqrt(2))}
    assert words == "cosine to teacher 0.7071"


def test_export_writes_nothing_for_a_student_that_is_not_a_transformers_encoder(tmp_path):
    Encoder().export(constant(one_hot(0, 1.0)), tmp_path)
    Classifier().export(constant(one_hot(0, 1.0)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_every_family_judges_the_student_as_cut():
    """A student cut from the teacher is judged as cut too (role "cut"), whatever the family."""
    models = {"student": 0, "cut": 0, "teacher": 0, "baseline": 0}  # any order in, the report's order out
    assert Family.judged(recipe("student", "baseline"), models) == ["teacher", "cut", "baseline", "student"]
    assert Family.judged(recipe("teacher"), models) == ["teacher", "cut", "baseline"]  # no stage trains it


@pytest.mark.parametrize("family", [Classifier(), Encoder()])
def test_final_metrics_judge_the_cut_beside_the_student(splits, family):
    teacher = constant(one_hot(2, 2.0))
    cut = constant(one_hot(3, 1.0), hidden=2)  # the student before training: other outputs
    student = constant(one_hot(2, 1.0), hidden=2)
    # an encoder's "embeddings" are these outputs; its few labels are drawn from the pool
    splits = Splits(splits.labelled_set, splits.transfer_set, None, splits.test_set,
                    pool_set=splits.labelled_set, pool_labels=splits.labelled_set.y)
    test = family.final_metrics(recipe("student"), {"teacher": teacher, "student": student, "cut": cut},
                                splits, CPU)["test"]
    assert list(test) == ["teacher", "cut", "student"]
    assert test["cut"]["params"] == test["student"]["params"]
    if isinstance(family, Classifier):
        assert test["cut"]["agreement"] == 0.0 and test["student"]["agreement"] == 1.0
    else:
        assert test["cut"]["mean_cosine"] == pytest.approx(0.0) and test["student"]["mean_cosine"] == pytest.approx(1.0)
