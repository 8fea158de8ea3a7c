"""Loss registry: each distillation method is one module registered by a lowercase name, with
a ``Contract`` saying what it reads.

Every loss is ``forward(student, teacher=None, target=None, **extra) -> scalar``: tensors in,
scalar out. Losses never see a model, a module path or the recipe; the objective feeds each
the features and extras its contract asks for.

Each loss also declares what its value is a mean over (``Contract.mean_over``, one of ``COUNTS``):
the training step counts those items over all its micro-batches and processes and weights each
micro-batch's value by its share of them, so that ``accumulate: k`` and N processes compute the
mean over the whole batch, as one process with the whole batch does. A loss made of parts that
average over different things (soft targets over samples, cross-entropy over labelled samples)
defines ``parts(...) -> {kind: value}`` beside ``forward`` (their sum).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from dataclasses import dataclass

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError
from torch import nn

from kdistill.data.splits import UNLABELLED
from kdistill.errors import KDistillError, shown
from kdistill.models.taps import OUTPUT

# what a loss value can be a mean over: kind -> count of those items in a batch (the model inputs as
# the models get them, the labels), a tensor on the batch's device (counting never waits for it).
# ``batch``: a statistic of the batch as a whole (relations between its samples, a normalisation by
# the batch); it has no items to count, so a micro-batch weighs as its share of the samples, and its
# value depends on which samples share a micro-batch, as batch norm's does.
def _number(n: int, y: torch.Tensor) -> torch.Tensor:
    return torch.full((), n, device=y.device)  # filled on the device: no copy from the host


COUNTS: dict[str, typing.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "samples": lambda x, y: _number(len(y), y),
    "labelled": lambda x, y: (y != UNLABELLED).sum(),
    "pairs": lambda x, y: _number(len(y) ** 2, y),  # ordered pairs (i, j), i = j included
    "batch": lambda x, y: _number(len(y), y),
    # a value of the step, not of its samples (a penalty on the weights): counted once a step
    "step": lambda x, y: _number(len(y), y),
}


def register_count(kind: str, count: typing.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """A new kind of item a loss may average over (``count(inputs, labels) -> 0-dim tensor``),
    e.g. the counted tokens of a language model's batch (``losses/token.py``)."""
    COUNTS[kind] = count


@dataclass(frozen=True)
class Contract:
    """What a registered loss declares about itself; the objective reads nothing else.

    Args:
        teacher: it reads a teacher feature (``teacher`` in forward; False: labels or the
            student alone, and the term gets ``teacher=None``).
        reads: the student feature it reads unless the recipe's term names one (``logits``
            for the output, ``weights`` for the trainable parameters, or a module path).
        adapt: the student feature passes through a learned adapter to the teacher feature's
            shape where the two differ (False: the loss compares within-sample or within-batch
            summaries, or has heads of its own, so the shapes may differ).
        index: forward takes ``index``, each sample's position in the stage's data ``(B,)``
            (for a memory bank of samples).
        start: forward takes ``start``, the weights theta_0 the stage's run chose: one tensor
            per trainable student parameter, in ``parameters()`` order. The term's ``start``
            argument names them (it is the objective's, not passed to the constructor):
            ``init`` (the student's initial weights), ``stage`` (the weights the stage starts
            from; the default) or an earlier stage's name (the weights it ended with).
        weights: forward takes ``weights``, the student's trainable parameters (a list of
            tensors, the live parameters, so gradients reach them).
        teacher_reads: the teacher feature it reads unless the recipe's term names one
            (default: the teacher's output).
        inputs: forward takes ``inputs``, the batch's model inputs as the models get them
            (token ids and masks, for losses per token).
        mean_over: what the value is a mean over, a kind in ``COUNTS`` (``samples``,
            ``labelled``, ``tokens``, ``pairs``, ``batch``, ``step``); a loss with ``parts`` averages each
            part over its own kind, and this names the kinds it may use.
    """

    teacher: bool = True  # its teacher features (and ``start``) arrive detached: a loss never trains them
    reads: str = OUTPUT
    adapt: bool = True
    index: bool = False
    start: bool = False
    weights: bool = False
    teacher_reads: str | tuple[str, ...] = OUTPUT
    inputs: bool = False
    mean_over: str | tuple[str, ...] = "samples"

    def __post_init__(self):
        unknown = [k for k in kinds_of(self.mean_over) if k not in COUNTS]
        if unknown:
            raise ValueError(f"Contract.mean_over: unknown kind {shown(unknown[0])}; known: {', '.join(COUNTS)} "
                             "(register_count adds one)")


def kinds_of(mean_over: str | tuple[str, ...]) -> tuple[str, ...]:
    return (mean_over,) if isinstance(mean_over, str) else tuple(mean_over)


@dataclass(frozen=True)
class Registered:
    """A registered loss: its class and its contract."""

    cls: type[nn.Module]
    contract: Contract


LOSSES: dict[str, Registered] = {}


def _detached(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value.detach() if hasattr(value, "detach") else value


def _teacher_detached(forward):
    """``forward`` with its teacher features and ``start`` weights detached: gradients reach
    the student and the loss's own parameters only, whatever the caller passes."""

    @functools.wraps(forward)
    def wrapped(self, student, teacher=None, *args, **kwargs):
        if "start" in kwargs:
            kwargs["start"] = _detached(kwargs["start"])
        return forward(self, student, _detached(teacher), *args, **kwargs)

    wrapped.detaches_teacher = True
    return wrapped


def register(name: str, contract: Contract = Contract()):
    """Register a loss class under ``name`` with its ``contract`` (default: reads the student's
    logits and the teacher's, adapted where shapes differ, a mean over samples). Its ``forward``
    (and ``parts``, if it has them) receives the teacher features detached."""

    def wrap(cls):
        for method in ("forward", "parts"):
            fn = getattr(cls, method, None)
            if fn is not None and not getattr(fn, "detaches_teacher", False):  # registered twice: wrapped once
                setattr(cls, method, _teacher_detached(fn))
        LOSSES[name] = Registered(cls, contract)
        return cls

    return wrap


def check_loss_name(name: str) -> str:
    if name not in LOSSES:
        close = difflib.get_close_matches(name, LOSSES, n=3) if len(name) <= 100 else []
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KDistillError(f"loss: unknown name {shown(name)}.{hint} Known: {', '.join(sorted(LOSSES))}.")
    return name


def contract_of(name: str) -> Contract:
    return LOSSES[check_loss_name(name)].contract


def loss_parts(loss: nn.Module, contract: Contract, *args, **kwargs) -> dict[str, torch.Tensor]:
    """The loss's value as ``{kind: mean over those items}``: its ``parts`` where it has them
    (each kind one its contract names), else ``{contract.mean_over: forward(...)}``."""
    if hasattr(loss, "parts"):
        parts = loss.parts(*args, **kwargs)
        stray = set(parts) - set(kinds_of(contract.mean_over))
        if stray:
            raise RuntimeError(f"{type(loss).__name__}.parts gave {sorted(stray)}, which its contract's "
                               f"mean_over {shown(contract.mean_over)} does not name")
        return parts
    (kind,) = kinds_of(contract.mean_over)
    return {kind: loss(*args, **kwargs)}


def constructor_args(name: str, args: dict) -> dict:
    """The term's arguments that go to the loss's constructor (``start`` is the objective's)."""
    return {k: v for k, v in args.items() if not (k == "start" and contract_of(name).start)}


def check_loss_args(name: str, kwargs: dict) -> dict:
    """The arguments fit the loss's constructor: their names, and their values the types its
    signature declares (``4`` for a float is 4.0; ``"four"`` fails). Returns them converted."""
    cls = LOSSES[check_loss_name(name)].cls
    # a loss without its own constructor takes nothing (nn.Module's would take and then refuse anything)
    signature = inspect.Signature() if cls.__init__ is nn.Module.__init__ else inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        known = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        raise KDistillError(f"loss {shown(name)}: bad arguments {kwargs}: {err}; it takes "
                            f"{', '.join(known) or 'no arguments'}.") from None
    hints = typing.get_type_hints(cls.__init__)
    checked = {}
    for key, value in kwargs.items():
        if key not in hints:
            checked[key] = value
            continue
        try:
            checked[key] = TypeAdapter(hints[key], config=ConfigDict(allow_inf_nan=False)).validate_python(value)
        except ValidationError as err:
            raise KDistillError(f"loss {shown(name)}: argument {key}={shown(value)}: {err.errors()[0]['msg']} "
                                f"({_type_name(hints[key])}).") from None
    return checked


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def build_loss(name: str, **kwargs) -> nn.Module:
    """Construct a registered loss. Arguments it does not take, or values it refuses (a
    ``ValueError`` from its constructor), are the user's and fail in one line; any other error
    inside the constructor is a bug and is raised as it is."""
    kwargs = check_loss_args(name, constructor_args(name, kwargs))
    try:
        return LOSSES[name].cls(**kwargs)
    except ValueError as err:
        raise KDistillError(f"loss {shown(name)}: {err}") from None
