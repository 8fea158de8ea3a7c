"""kdistill.train.optim: the optimiser kinds and the per-step learning-rate schedule, by hand."""

import math

import pytest
import torch

from kdistill.recipe import OptimizerSpec, ScheduleSpec
from kdistill.train.optim import make_optimizer, make_schedule, no_decay_params


def _lrs(steps: int, total_steps: int, steps_per_epoch: int, **kw):
    """The learning rate of every step 0..steps-1 with base lr 1."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = make_schedule(opt, total_steps, steps_per_epoch, ScheduleSpec(**kw))
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs


def test_warmup_then_cosine():
    # 5 epochs of 2 steps, 1 epoch of warm-up: steps 0, 1 ramp up to 1, then cosine over 8 steps
    lrs = _lrs(11, total_steps=10, steps_per_epoch=2, name="cosine", warmup_epochs=1)
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    assert lrs == pytest.approx(expected)
    assert lrs[2] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)


def test_cosine_without_warmup_and_past_the_end():
    lrs = _lrs(7, total_steps=4, steps_per_epoch=1, name="cosine")
    assert lrs == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)),
                                 0.0, 0.0, 0.0])  # held at 0 past total_steps


def test_fractional_warmup_epochs():
    # half an epoch of 4 steps: 2 warm-up steps
    lrs = _lrs(4, total_steps=8, steps_per_epoch=4, name="constant", warmup_epochs=0.5)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_step_decay():
    # every 2 epochs of 3 steps, times 0.1
    lrs = _lrs(13, total_steps=100, steps_per_epoch=3, name="step", step_size=2, gamma=0.1)
    assert lrs == pytest.approx([1.0] * 6 + [0.1] * 6 + [0.01])


def test_constant():
    assert _lrs(5, total_steps=5, steps_per_epoch=1, name="constant") == pytest.approx([1.0] * 5)


def test_warmup_scales_the_base_learning_rate():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    make_schedule(opt, 10, 4, ScheduleSpec(name="constant", warmup_epochs=1))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # 0.2 * 1/4


def _params():
    return [torch.nn.Parameter(torch.zeros(2, 2))]


def test_sgd_with_momentum_is_nesterov():
    opt = make_optimizer(_params(), OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 1e-4)


def test_sgd_without_momentum_drops_nesterov():
    # torch refuses nesterov without momentum; it is dropped instead of failing
    opt = make_optimizer(_params(), OptimizerSpec(name="sgd", lr=0.1, momentum=0.0, nesterov=True))
    assert opt.param_groups[0]["nesterov"] is False and opt.param_groups[0]["momentum"] == 0.0


def test_sgd_nesterov_off_when_asked():
    opt = make_optimizer(_params(), OptimizerSpec(name="sgd", momentum=0.9, nesterov=False))
    assert opt.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_kinds(name, cls):
    # momentum and nesterov (the recipe always passes them) are the SGD's only
    opt = make_optimizer(_params(), OptimizerSpec(name=name, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.01))
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 0.01


def test_the_recipe_defaults_are_nesterov_sgd_with_weight_decay():
    opt = make_optimizer(_params(), OptimizerSpec())
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.9, True, 5e-4)


def _layers():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))


def test_biases_and_normalisation_weights_are_not_decayed_by_default():
    model = _layers()
    opt = make_optimizer(model.parameters(), OptimizerSpec(weight_decay=0.1), no_decay_params(model))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.1 if name in ("0.weight", "3.weight") else 0.0  # conv kernel and linear matrix only
        assert decay[id(p)] == expected, name
    # one SGD step with zero gradients: decay alone moves the matrices, nothing else
    for p in model.parameters():
        p.data.fill_(1.0)
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, torch.ones_like(p))
        assert moved == (name in ("0.weight", "3.weight")), name


def test_decay_bias_and_norm_decays_every_parameter_in_one_group():
    model = _layers()
    opt = make_optimizer(model.parameters(), OptimizerSpec(weight_decay=0.1, decay_bias_and_norm=True),
                         no_decay_params(model))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))
    # without decay there is nothing to split either: one group, the parameters in order
    opt = make_optimizer(model.parameters(), OptimizerSpec(weight_decay=0.0), no_decay_params(model))
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in model.parameters()]


def test_the_groups_do_not_depend_on_whether_a_lazy_layer_has_its_shape():
    """A lazily built layer (a LazyLinear, a loss's head) is grouped by its names and type, so a
    resumed run, whose layers got their shapes from the checkpoint, rebuilds the same groups."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def groups(model):
        opt = make_optimizer(model.parameters(), OptimizerSpec(weight_decay=0.1), no_decay_params(model))
        names = {id(p): n for n, p in model.named_parameters()}
        return [sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups]

    torch.manual_seed(0)
    lazy = torch.nn.Sequential(torch.nn.LazyLinear(3), LlamaRMSNorm(3))
    before = groups(lazy)
    lazy(torch.randn(2, 5))  # shaped now
    assert groups(lazy) == before == [["0.weight"], ["0.bias", "1.weight"]]  # an RMS norm of transformers' too
