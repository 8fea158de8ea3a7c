"""One contract test over every registered loss.

For each name in ``LOSSES`` the table below gives a small example (student input, teacher input,
target, extras, built from a fixed seed) and the constructor arguments. The tests then check
what every loss owes the objective:

- the table covers exactly the registered names (a new loss without an entry fails here);
- the value is a finite 0-dim tensor;
- where it holds mathematically, the value is 0 when the student equals the teacher;
- gradients reach every student input and each of the loss's own parameters;
- no gradient reaches a teacher input the caller did *not* detach (the loss detaches it);
- the contract agrees with forward: the extras it declares are the ones forward takes, a loss
  with ``teacher=False`` runs with ``teacher=None``, one with ``teacher=True`` reads the teacher.

The per-loss files keep what is particular to each loss (values by hand, references, edge cases,
argument errors).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from torch.nn.parameter import is_lazy

from kdistill.losses import LOSSES, build_loss
from kdistill.models.taps import WEIGHTS

B = 4  # batch size of every example

LABELS_ONLY = "reads the labels, not a teacher: there is no teacher to equal"


@dataclass
class Example:
    student: object  # a tensor, a tuple of tensors (fsp) or a list of parameters (l2_start)
    teacher: object  # a tensor, a tuple of tensors (fsp, multi_kd) or None (teacher=False)
    target: torch.Tensor | None
    extras: dict


@dataclass(frozen=True)
class Case:
    """make(g) -> (student, teacher, target, extras), drawing from the generator g.

    zero_when_equal: True, or why the loss is not 0 when the student equals the teacher.
    twin: builds a teacher equal to the student where the teacher is not simply a copy of it.
    """

    make: Callable[[torch.Generator], tuple]
    args: dict = field(default_factory=dict)
    zero_when_equal: bool | str = True
    twin: Callable | None = None


def randn(g, *shape):
    return torch.randn(*shape, generator=g)


def logits(g, classes=5):
    return randn(g, B, classes) * 2


MIXED_LABELS = torch.tensor([1, -1, 2, 0])  # one unlabelled sample (-1)


def lm_side(g, L=5, d=6, V=11, bias=True):
    """A language model's side of a token loss: hidden states and its output projection."""
    return randn(g, B, L, d), (randn(g, V, d), randn(g, V) if bias else None)


def lm_inputs(g, L=5, V=11):
    """Token ids, attention mask and loss mask ``(B, 3, L)``, one sequence right-padded."""
    ids = torch.randint(V, (B, L), generator=g)
    attention = torch.ones(B, L, dtype=torch.long)
    attention[0, 3:] = 0
    loss_mask = attention.clone()
    loss_mask[:, 0] = 0
    return torch.stack([ids, attention, loss_mask], 1)

CASES: dict[str, Case] = {
    # channel counts and spatial sizes may differ (adapt=False)
    "at": Case(lambda g: (randn(g, B, 3, 4, 4), randn(g, B, 5, 2, 2), None, {})),
    "cc": Case(lambda g: (randn(g, B, 6), randn(g, B, 10), None, {})),
    "ce": Case(lambda g: (logits(g), None, MIXED_LABELS, {}), zero_when_equal=LABELS_ONLY),
    "crd": Case(lambda g: (randn(g, B, 3, 2, 2), randn(g, B, 5), None, {"index": torch.tensor([3, 0, 5, 1])}),
                args={"feat_dim": 8, "num_negatives": 3},
                # InfoNCE: -log of a softmax over the positive and K bank negatives, > 0 for any
                # inputs (and the two sides pass through different heads)
                zero_when_equal="InfoNCE against memory-bank negatives is > 0 for any inputs"),
    "dist": Case(lambda g: (logits(g), logits(g), None, {})),
    "distance_kl": Case(lambda g: (randn(g, B, 6), randn(g, B, 10), None, {})),
    "dkd": Case(lambda g: (logits(g), logits(g), MIXED_LABELS, {})),
    "embed_cosine": Case(lambda g: (randn(g, B, 8), randn(g, B, 8), None, {})),
    "embed_mse": Case(lambda g: (randn(g, B, 8), randn(g, B, 8), None, {})),
    # the student's own entropy: no teacher, and H > 0 unless the predictions are one-hot
    "entropy": Case(lambda g: (logits(g), None, None, {}),
                    zero_when_equal="reads the student alone (its entropy, > 0)"),
    "fsp": Case(lambda g: ((randn(g, B, 3, 4, 4), randn(g, B, 5, 2, 2)),
                           (randn(g, B, 3, 4, 4), randn(g, B, 5, 2, 2)), None, {})),
    "hint": Case(lambda g: (randn(g, B, 3, 4, 4), randn(g, B, 3, 4, 4), None, {})),
    # no labels (a transfer set): the CE part drops out and the default alpha = 0.9 still gives 0
    "kd": Case(lambda g: (logits(g), logits(g), None, {})),
    # no teacher: "equal" means the weights equal theta_0 (start=)
    "l2_start": Case(lambda g: ([randn(g, 3, 2), randn(g, 3)], None, None,
                                {"start": [randn(g, 3, 2), randn(g, 3)]})),
    "multi_kd": Case(lambda g: (logits(g), (logits(g), logits(g)), None, {}),
                     twin=lambda s: (s.detach().clone(), s.detach().clone())),
    "nst": Case(lambda g: (randn(g, B, 3, 4, 4), randn(g, B, 5, 2, 2), None, {})),
    "ovr": Case(lambda g: (logits(g), None, MIXED_LABELS, {}), zero_when_equal=LABELS_ONLY),
    "pkt": Case(lambda g: (randn(g, B, 2, 3, 3), randn(g, B, 5), None, {})),
    # KL(p || M) is 0, but lam * H(p), the teacher's entropy, is a constant > 0
    "prototype_kl": Case(lambda g: (logits(g), logits(g), None, {}),
                         zero_when_equal="adds lam * H(p), the teacher's entropy (> 0)"),
    "residual_smooth": Case(lambda g: (randn(g, B, 3, 4, 4), randn(g, B, 3, 4, 4), None, {})),
    "rkd": Case(lambda g: (randn(g, B, 6), randn(g, B, 10), None, {})),
    "scatter": Case(lambda g: (randn(g, B, 6), None, torch.tensor([0, 0, 1, -1]), {}),
                    zero_when_equal=LABELS_ONLY),
    "sp": Case(lambda g: (randn(g, B, 3, 2, 2), randn(g, B, 5, 4, 4), None, {})),
    # Gaussian NLL: at mu = z it is 0.5 * log sigma^2 (its minimum in mu), not 0
    # language models: (final hidden states (B, L, d), output projection (W, b)), token ids and masks
    "token_ce": Case(lambda g: (lm_side(g, bias=True), None, None, {"inputs": lm_inputs(g)}),
                     zero_when_equal=LABELS_ONLY),
    "token_kd": Case(lambda g: (lm_side(g, bias=True), lm_side(g, bias=False), None, {"inputs": lm_inputs(g)}),
                     twin=lambda s: as_leaves(s, False)),
    "vid": Case(lambda g: (randn(g, B, 3, 4, 4), randn(g, B, 3, 4, 4), None, {}),
                zero_when_equal="Gaussian NLL keeps 0.5 * log sigma^2 at mu = z"),
}

# Losses that let gradient flow into a teacher input the caller did not detach. Each is a real
# finding (the loss should detach the teacher itself, as crd does); strict, so that fixing one
# makes its entry fail here until it is removed.
NAMES = sorted(LOSSES)


def case(name: str) -> Case:
    if name not in CASES:
        pytest.fail(f"loss {name!r} has no entry in tests/losses/test_contract.py CASES")
    return CASES[name]


def leaves(x) -> list[torch.Tensor]:
    """The tensors in an input: a tensor, a (nested) tuple or list of tensors, or None."""
    if x is None:
        return []
    return [x] if isinstance(x, torch.Tensor) else [leaf for t in x for leaf in leaves(t)]


def as_leaves(x, requires_grad: bool):
    """A copy of an input whose tensors are fresh leaves (with the same container type)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(requires_grad)
    return type(x)(as_leaves(t, requires_grad) for t in x)


def example(name: str, seed: int = 0) -> Example:
    return Example(*case(name).make(torch.Generator().manual_seed(seed)))


def fresh_loss(name: str):
    torch.manual_seed(0)  # lazy heads (crd) are initialised from the global generator
    return build_loss(name, **case(name).args)


def call(loss, ex: Example):
    return loss(ex.student, ex.teacher, ex.target, **ex.extras)


def declared_extras(name: str) -> set[str]:
    c = LOSSES[name].contract
    return {key for key, on in (("index", c.index), ("start", c.start), ("weights", c.weights),
                                ("inputs", c.inputs)) if on}


def with_parameters_shaped(loss, ex: Example):
    """Give lazy parameters their shapes with one call, so ``loss.parameters()`` can be read."""
    if any(is_lazy(p) for p in loss.parameters()):
        with torch.no_grad():
            call(loss, ex)
    return loss


def backward_with_live_teacher(name: str):
    """One backward pass with student and teacher as leaves that require grad, neither detached.

    Returns (student leaves, teacher leaves, the loss's own parameters).
    """
    ex = example(name)
    loss = with_parameters_shaped(fresh_loss(name), ex)
    ex.student = as_leaves(ex.student, True)
    ex.teacher = as_leaves(ex.teacher, True)  # not detached: the loss must cut it
    if "weights" in ex.extras:  # the live student parameters
        ex.extras["weights"] = as_leaves(ex.extras["weights"], True)
    call(loss, ex).backward()
    student = leaves(ex.student) + leaves(ex.extras.get("weights"))
    return student, leaves(ex.teacher), list(loss.named_parameters())


def test_table_covers_exactly_the_registered_losses():
    assert sorted(CASES) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_value_is_a_finite_scalar(name):
    value = call(fresh_loss(name), example(name))
    assert isinstance(value, torch.Tensor) and value.dim() == 0, f"{name}: {value!r}"
    assert value.is_floating_point() and torch.isfinite(value), f"{name}: {value.item()}"


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CASES or CASES[n].zero_when_equal is True])
def test_zero_when_student_equals_teacher(name):
    ex, c = example(name), case(name)
    if LOSSES[name].contract.start:  # no teacher: the reference is theta_0
        ex.extras["start"] = as_leaves(ex.student, False)
    else:
        ex.teacher = c.twin(ex.student) if c.twin else as_leaves(ex.student, False)
    value = call(fresh_loss(name), ex)
    assert abs(value.item()) <= 1e-6, f"{name}: {value.item()}"


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_the_student_and_the_losss_own_parameters(name):
    student, _, params = backward_with_live_teacher(name)
    assert student
    for i, x in enumerate(student):
        assert x.grad is not None, f"{name}: student input {i} got no gradient"
        assert torch.isfinite(x.grad).all(), f"{name}: student input {i} got a non-finite gradient"
        assert x.grad.abs().sum() > 0, f"{name}: student input {i} got a zero gradient"
    for pname, p in params:
        assert p.grad is not None, f"{name}: its parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: {pname}"


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CASES or LOSSES[n].contract.teacher])
def test_no_gradient_reaches_an_undetached_teacher(name):
    _, teacher, _ = backward_with_live_teacher(name)
    assert teacher, f"{name}: the example has no teacher input"
    for i, t in enumerate(teacher):
        assert t.grad is None or not t.grad.any(), f"{name}: teacher input {i} got a gradient"


@pytest.mark.parametrize("name", NAMES)
def test_contract_agrees_with_forward_and_the_example(name):
    c, ex = LOSSES[name].contract, example(name)
    forward = inspect.signature(LOSSES[name].cls.forward).parameters
    takes = {k for k, p in forward.items()
             if k not in ("self", "student", "teacher", "target") and p.kind is not p.VAR_KEYWORD}
    assert takes == declared_extras(name), f"{name}: forward takes {takes}, the contract declares {declared_extras(name)}"
    assert set(ex.extras) == declared_extras(name)
    assert (ex.teacher is not None) == c.teacher
    assert isinstance(ex.student, list) == (c.reads == WEIGHTS)


@pytest.mark.parametrize("name", [n for n in NAMES if not LOSSES[n].contract.teacher])
def test_teacher_free_losses_run_with_teacher_none(name):
    ex = example(name)
    value = fresh_loss(name)(ex.student, None, ex.target, **ex.extras)
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES[n].contract.teacher])
def test_teacher_losses_read_the_teacher(name):
    ex, other = example(name), example(name, seed=1)
    first = call(fresh_loss(name), ex)
    ex.teacher = other.teacher
    assert call(fresh_loss(name), ex).item() != pytest.approx(first.item(), abs=1e-6), name


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES[n].contract.index])
def test_index_losses_run_with_index(name):
    ex = example(name)
    assert "index" in ex.extras and ex.extras["index"].dtype == torch.long and ex.extras["index"].shape == (B,)
    assert torch.isfinite(call(fresh_loss(name), ex))


def _rows(x, rows: slice):
    """The samples ``rows`` of an example's part: tensors of ``B`` rows sliced, tuples and lists
    walked, anything else (an output projection, shared by the samples) kept."""
    if isinstance(x, (tuple, list)):
        return type(x)(_rows(v, rows) for v in x)
    return x[rows] if isinstance(x, torch.Tensor) and x.dim() and len(x) == B else x


# kinds whose mean over a batch is the count-weighted mean of its parts' means
SPLITTABLE = {"samples", "labelled", "tokens"}


@pytest.mark.parametrize("name", NAMES)
def test_parts_name_the_declared_kinds_and_add_up_to_forward(name):
    from kdistill.losses.registry import COUNTS, kinds_of, loss_parts

    ex, contract = example(name), LOSSES[name].contract
    assert set(kinds_of(contract.mean_over)) <= set(COUNTS)
    parts = loss_parts(with_parameters_shaped(fresh_loss(name), ex).eval(), contract, ex.student, ex.teacher,
                       ex.target, **ex.extras)
    assert parts and set(parts) <= set(kinds_of(contract.mean_over))
    torch.testing.assert_close(sum(parts.values()), call(with_parameters_shaped(fresh_loss(name), ex).eval(), ex))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "crd"])  # crd draws new negatives each call
def test_a_declared_mean_is_one(name):
    """A loss that says its value is a mean over samples, labelled samples or tokens is one: the
    two halves of a batch, each weighted by its share of those items, give the whole batch's value.
    (``pairs``, ``batch`` and ``step`` values are not means over items a half holds.)"""
    from kdistill.losses.registry import COUNTS, loss_parts

    contract = LOSSES[name].contract
    ex = example(name)
    loss = with_parameters_shaped(fresh_loss(name), ex).eval()
    labels = ex.target if ex.target is not None else torch.full((B,), -1)

    def parts_and_counts(rows: slice):
        args = [_rows(v, rows) for v in (ex.student, ex.teacher, ex.target)]
        extras = {k: _rows(v, rows) for k, v in ex.extras.items()}
        parts = loss_parts(loss, contract, *args, **extras)
        return parts, {k: COUNTS[k](extras.get("inputs"), labels[rows]) for k in parts}

    whole, counts = parts_and_counts(slice(None))
    if not set(whole) <= SPLITTABLE:
        pytest.skip(f"{name}: a mean over {sorted(set(whole) - SPLITTABLE)}, not over items of the batch")
    halves = [parts_and_counts(slice(0, B // 2)), parts_and_counts(slice(B // 2, None))]
    split = sum(value * n[k] / counts[k].clamp_min(1) for parts, n in halves for k, value in parts.items())
    torch.testing.assert_close(split, sum(whole.values()), rtol=1e-5, atol=1e-6)
