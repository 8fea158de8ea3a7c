"""A new loss is one file: this one, defined here alone, reads a teacher feature through an
adapter, the samples' index, the stage's starting weights and a parameter of its own, and runs
from a recipe with nothing else in kdistill touched."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from kdistill import run
from kdistill.losses.registry import LOSSES, Contract, register
from fixtures import stage_records

SEEN: dict[str, list] = {"index": [], "start": [], "shapes": []}


class ProbeLoss(nn.Module):
    """``scale * mean((adapted student - teacher)^2) + 1e-3 * ||theta_0||^2``, with ``scale`` learned."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, student, teacher, target=None, index=None, start=None):
        SEEN["index"].append(index.cpu())
        SEEN["start"].append([p.clone() for p in start])
        SEEN["shapes"].append((tuple(student.shape), tuple(teacher.shape)))
        pull = sum((p.float() ** 2).sum() for p in start)
        return self.scale * (student - teacher).pow(2).mean() + 1e-3 * pull


@pytest.fixture
def probe():
    register("_probe", Contract(index=True, start=True))(ProbeLoss)
    for seen in SEEN.values():
        seen.clear()
    yield
    del LOSSES["_probe"]


def test_a_loss_defined_in_a_test_file_runs_from_a_recipe(probe, tmp_path):
    recipe = {"name": "probe", "seed": 0, "latency": False, "data": {"source": "digits", "labelled": 100},
              "teacher": {"model": "cnn", "args": {"channels": [8, 16], "image_size": 8}},
              "student": {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 64,
                          "loss": [{"loss": "_probe", "student": "stages.1", "teacher": "stages.1",
                                    "args": {"scale": 0.5, "start": "init"}}]}]}
    result = run(recipe, runs_dir=tmp_path, progress=False)
    transfer = result.summary["data"]["transfer"]
    # the adapter mapped the student's 8-channel map to the teacher's 16 channels
    assert {shapes for shapes in SEEN["shapes"]} >= {((64, 16, 4, 4), (64, 16, 4, 4))}
    # every sample's index reached the loss, once an epoch
    seen = torch.cat(SEEN["index"])
    assert len(seen) == 2 * transfer and torch.equal(seen.sort().values.unique(), torch.arange(transfer))
    # theta_0 is the student's initial weights (start: init), the same at every step
    student = result.models["student"]
    first = SEEN["start"][0]
    assert len(first) == len([p for p in student.parameters() if p.requires_grad])
    assert all(torch.equal(a, b) for a, b in zip(first, SEEN["start"][-1]))
    assert not all(torch.equal(a, p.detach().cpu()) for a, p in zip(first, student.parameters()))  # it trained
    distil = stage_records(result.run_dir)["distil"]
    assert [r["epoch"] for r in distil] == [1, 2] and "_probe" in distil[-1]["train"]


def test_its_own_parameter_and_the_adapter_learn(probe):
    from kdistill.objective.core import build_objective

    objective = build_objective([{"loss": "_probe", "student": "s", "teacher": "t", "args": {"scale": 2.0}}])
    objective.adapters = nn.ModuleDict({"s->t": nn.Linear(3, 5)})
    objective.starts = {"_probe": [torch.ones(2)]}
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    total, terms = objective({"s": s}, {"t": t}, None, torch.arange(4))
    total.backward()
    assert objective.losses[0].scale.grad is not None and s.grad is not None
    assert t.grad is None  # the registry hands every loss its teacher detached
    assert terms["_probe"].item() == pytest.approx(total.item())


def test_a_bad_argument_fails_when_the_recipe_is_read(probe):
    from kdistill.errors import KDistillError
    from kdistill.recipe import load_recipe

    tree = {"name": "x", "data": {"source": "digits"}, "teacher": {"model": "mlp", "args": {"in_features": 64}},
            "student": {"model": "mlp", "args": {"in_features": 64}},
            "stages": [{"name": "s", "loss": [{"loss": "_probe", "args": {"scael": 1.0}}]}]}
    with pytest.raises(KDistillError, match="scael"):
        load_recipe(tree)
