"""kdistill.objective.shallow: prototype distances, and the ``embedding`` section's provider
(a PCA of a teacher tap, the student mapped into it, prototypes started at class means)."""

import pytest
import torch
from torch import nn

from kdistill.data.load import prepare_data
from kdistill.models.adapters import adapter_key
from kdistill.models.projection import PCAProjection, fit_pca
from kdistill.models.zoo import build_model
from kdistill.objective.features import StageContext
from kdistill.objective.shallow import PrototypeHead, ShallowSpace, fit_teacher_embedding
from kdistill.recipe import load_recipe

CPU = torch.device("cpu")


def test_prototype_head_gives_negative_squared_distances():
    head = PrototypeHead(num_classes=3, dim=2)
    with torch.no_grad():
        head.prototypes.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]))
    emb = torch.tensor([[1.0, 0.0], [2.0, 2.0], [-1.0, 2.0]])
    expected = -torch.tensor([[1.0, 1.0, 8.0],    # (1,0): to (0,0) 1; to (1,1) 1; to (-1,2) 4+4
                              [8.0, 2.0, 9.0],    # (2,2): 4+4; 1+1; 9+0
                              [5.0, 5.0, 0.0]])   # (-1,2): 1+4; 4+1; 0
    torch.testing.assert_close(head(emb), expected)
    assert head(emb.double()).dtype == torch.float32


def test_prototype_head_gradient_is_finite_at_zero_distance():
    head = PrototypeHead(2, 3)
    emb = torch.zeros(1, 3, requires_grad=True)  # exactly on prototype 0 (and 1)
    head(emb).sum().backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.prototypes.grad).all()


TEACHER = {"model": "cnn", "args": {"channels": [8, 16], "hidden": 16, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}  # head: Flatten, Dropout, Linear


@pytest.fixture(scope="module")
def shallow():
    recipe = load_recipe({
        "name": "shallow", "seed": 3, "device": "cpu", "data": {"source": "digits", "labelled": 100},
        "teacher": TEACHER, "student": STUDENT,
        # head.2: the teacher's 16-unit hidden layer; head.0: the student's flattened (8, 4, 4) map
        "embedding": {"teacher": "head.2", "student": "head.0", "dim": 4, "max_samples": 300, "shots": [1, 5]},
        "stages": [{"name": "distil", "data": "transfer",
                    "loss": [{"loss": "embed_mse", "student": "head.0", "teacher": "embedding"}]},
                   {"name": "protos", "data": "labelled+transfer",
                    "loss": [{"loss": "ce", "student": "prototypes"}]}]})
    splits, _ = prepare_data(recipe)
    torch.manual_seed(0)
    models = {"teacher": build_model("cnn", **TEACHER["args"]).eval(), "student": build_model("cnn", **STUDENT["args"])}
    return recipe, splits, models


def _space(shallow):
    recipe, splits, models = shallow
    return ShallowSpace.from_recipe(recipe, models, splits, CPU, splits.test_set.x[:2], 10)


def _context(shallow, teacher_changed=False):
    recipe, splits, models = shallow
    return StageContext(models["student"], models, splits, CPU, teacher_changed=teacher_changed, seed=recipe.seed)


def _teacher_hidden(teacher, x):
    teacher.eval()
    with torch.no_grad():
        return teacher.head[:3](teacher.stages(x))  # Flatten, Dropout, Linear: head.2's output


def test_from_recipe_is_none_without_an_embedding_section(shallow):
    recipe, splits, models = shallow
    plain = load_recipe({**recipe.model_dump(), "embedding": None,
                         "stages": [{"name": "a", "data": "transfer", "loss": [{"loss": "kd"}]}]})
    assert ShallowSpace.from_recipe(plain, models, splits, CPU, splits.test_set.x[:2], 10) is None


def test_from_recipe_builds_the_space_the_recipe_describes(shallow):
    recipe, splits, models = shallow
    space = _space(shallow)
    assert isinstance(space.pca, PCAProjection) and space.pca.components.shape == (16, 4)
    adapter, head = space.head
    assert isinstance(adapter, nn.Linear) and (adapter.in_features, adapter.out_features) == (128, 4)
    assert isinstance(head, PrototypeHead) and head.prototypes.shape == (10, 4)
    # the PCA is fitted on a seeded sample of max_samples training inputs (pool: labelled and transfer)
    pool = splits.pool_set.x
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(recipe.seed))[:300]
    expected = fit_pca(_teacher_hidden(models["teacher"], pool[order]), 4)
    torch.testing.assert_close(space.pca.mean, expected.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(space.pca.components, expected.components, rtol=1e-3, atol=1e-4)
    # the features and the adapter the objectives share
    assert space.student_features() == {"prototypes": ("head.0", space.head)}
    assert space.teacher_features() == {"embedding": ("head.2", space.pca)}
    assert space.adapters() == {adapter_key("head.0", "embedding"): adapter}
    assert space.files() == {"embedding_head": space.head}


def test_prepare_starts_prototypes_at_class_means(shallow):
    recipe, splits, models = shallow
    space = _space(shallow)
    student = models["student"]
    student.train()
    assert space.prepare(_context(shallow), {"prototypes", "logits"}) is False  # nothing teacher-side refitted
    labelled = splits.labelled_set
    student.eval()
    with torch.no_grad():
        emb = space.head[0](student.stages(labelled.x[:]).flatten(1))
    student.train()
    means = torch.stack([emb[labelled.y == c].mean(0) for c in range(10)])
    torch.testing.assert_close(space.head[1].prototypes.detach(), means, rtol=1e-4, atol=1e-5)
    assert student.training and space.head.training  # modes restored


def test_prepare_leaves_prototypes_alone_when_not_read(shallow):
    space = _space(shallow)
    with torch.no_grad():
        space.head[1].prototypes.fill_(7.0)
    space.prepare(_context(shallow, teacher_changed=True), {"logits"})
    assert bool((space.head[1].prototypes == 7.0).all())


def test_pca_refitted_only_when_the_teacher_changed_and_embedding_is_read(shallow):
    recipe, splits, models = shallow
    space = _space(shallow)
    teacher = models["teacher"]
    original = {k: v.clone() for k, v in teacher.state_dict().items()}
    fitted = {k: v.clone() for k, v in space.pca.state_dict().items()}
    try:
        with torch.no_grad():
            teacher.head[2].weight.mul_(-2.0).add_(0.1)  # a stage trained the teacher
        assert space.prepare(_context(shallow, teacher_changed=False), {"embedding"}) is False
        assert all(torch.equal(v, space.pca.state_dict()[k]) for k, v in fitted.items())
        assert space.prepare(_context(shallow, teacher_changed=True), {"prototypes"}) is False
        assert all(torch.equal(v, space.pca.state_dict()[k]) for k, v in fitted.items())
        pca = space.pca
        assert space.prepare(_context(shallow, teacher_changed=True), {"embedding"}) is True
        assert space.pca is pca  # refitted in place: the objectives hold this module
        expected = fit_teacher_embedding(teacher, "head.2", splits.pool_set.x, 4, CPU, 300, recipe.seed)
        torch.testing.assert_close(space.pca.components, expected.components)
        assert not torch.allclose(space.pca.mean, fitted["mean"])
    finally:
        teacher.load_state_dict(original)


def test_summary_keys_and_prototype_head_accuracy(shallow):
    recipe, splits, models = shallow
    space = _space(shallow)
    space.prepare(_context(shallow), {"prototypes"})
    summary = space.summary(_context(shallow))
    assert list(summary) == ["embedding"]
    emb = summary["embedding"]
    shots = {"prototype@1", "knn@1", "prototype@5", "knn@5"}
    shots |= {k.replace("@", "_balanced@") for k in shots} | {"majority_rate"}  # balanced accuracy beside each
    assert set(emb) == {"teacher", "student"}
    assert set(emb["teacher"]) == shots and set(emb["student"]) == shots | {"prototype_head"}
    assert all(0.0 <= v <= 1.0 for role in emb.values() for v in role.values())
    student, test = models["student"], splits.test_set
    student.eval()
    with torch.no_grad():
        logits = space.head(student.stages(test.x[:]).flatten(1))
    student.train()
    expected = (logits.argmax(1) == test.y).float().mean().item()
    assert emb["student"]["prototype_head"] == pytest.approx(expected, abs=1e-6)
    assert space.head.training
