"""The loss registry (kdistill/losses/registry.py): registering a loss with its contract, names
checked with a suggestion, arguments checked before the constructor runs, and the teacher's
features handed to forward detached. Every loss registered here is removed again (the contract
test in test_contract.py checks that its table covers exactly the registered names)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.losses.registry import (
    LOSSES,
    Contract,
    Registered,
    build_loss,
    check_loss_name,
    constructor_args,
    contract_of,
    register,
)
from kdistill.objective.core import build_objective


@pytest.fixture
def registered():
    """``registered(name, contract)(cls)`` registers a loss for one test only."""
    names = []

    def add(name, contract=Contract()):
        names.append(name)
        return register(name, contract)

    yield add
    for name in names:
        LOSSES.pop(name, None)


class Scaled(nn.Module):
    """``scale * sum(student * teacher)``; refuses a negative scale."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        if scale < 0:
            raise ValueError(f"scale must be 0 or more, got {scale}")
        self.scale = scale

    def forward(self, student, teacher=None, target=None):
        return self.scale * (student * teacher).sum()


def test_register_records_the_class_and_its_contract(registered):
    contract = Contract(teacher=False, reads="stages.0", adapt=False, index=True)
    cls = registered("_reg_scaled", contract)(Scaled)
    assert cls is Scaled  # the decorator gives the class back
    assert LOSSES["_reg_scaled"] == Registered(Scaled, contract)
    assert contract_of("_reg_scaled") is contract
    assert check_loss_name("_reg_scaled") == "_reg_scaled"


def test_the_default_contract_reads_logits_from_a_teacher_through_an_adapter(registered):
    registered("_reg_default")(Scaled)
    contract = contract_of("_reg_default")
    assert (contract.teacher, contract.reads, contract.adapt) == (True, "logits", True)
    assert not (contract.index or contract.start or contract.weights)


def test_a_misspelt_name_gets_a_suggestion_and_the_known_names():
    with pytest.raises(KDistillError, match=r"unknown name 'kdd'\. Did you mean kd") as err:
        check_loss_name("kdd")
    assert "Known: " in str(err.value) and "l2_start" in str(err.value)
    with pytest.raises(KDistillError, match="unknown name 'hnit'. Did you mean hint"):
        contract_of("hnit")
    with pytest.raises(KDistillError, match="unknown name 'zzzzzzzz'") as err:
        build_loss("zzzzzzzz")
    assert "Did you mean" not in str(err.value)  # nothing close: no guess


def test_build_loss_constructs_with_the_arguments(registered):
    registered("_reg_scaled")(Scaled)
    loss = build_loss("_reg_scaled", scale=2.5)
    assert isinstance(loss, Scaled) and loss.scale == 2.5
    assert loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])).item() == 2.5 * (3 + 8)


def test_an_unknown_argument_is_named_with_what_the_loss_takes(registered):
    registered("_reg_scaled")(Scaled)
    with pytest.raises(KDistillError, match=r"loss '_reg_scaled': bad arguments \{'temperature': 4\}") as err:
        build_loss("_reg_scaled", temperature=4)
    assert "it takes scale." in str(err.value)
    with pytest.raises(KDistillError, match=r"loss 'kd': bad arguments .*'gamma'.*it takes temperature, alpha\."):
        build_loss("kd", temperature=4.0, gamma=1)  # a real loss: 'gamma' is not kd's


def test_a_value_the_constructor_refuses_becomes_a_one_line_error(registered):
    registered("_reg_scaled")(Scaled)
    with pytest.raises(KDistillError, match=r"^loss '_reg_scaled': scale must be 0 or more, got -1\.0$") as err:
        build_loss("_reg_scaled", scale=-1.0)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_any_other_error_inside_a_constructor_propagates_unchanged(registered):
    class Buggy(nn.Module):
        def __init__(self, size: int = 3):
            super().__init__()
            self.table = [0] * size
            self.table[size]  # an IndexError: a bug in the loss, not the user's input

        def forward(self, student, teacher=None, target=None):
            return student.sum()

    registered("_reg_buggy")(Buggy)
    with pytest.raises(IndexError, match="list index out of range"):
        build_loss("_reg_buggy")
    with pytest.raises(IndexError):
        build_loss("_reg_buggy", size=5)


class Pull(nn.Module):
    """``scale * sum((p - p0)^2)`` over (student, start) pairs; ``start`` is not a constructor argument."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, student, teacher=None, target=None, start=None):
        return self.scale * sum(((p - p0) ** 2).sum() for p, p0 in zip(student, start))


def test_start_goes_to_the_objective_not_the_constructor(registered):
    registered("_reg_pull", Contract(teacher=False, reads="weights", start=True))(Pull)
    assert constructor_args("_reg_pull", {"scale": 2.0, "start": "init"}) == {"scale": 2.0}
    loss = build_loss("_reg_pull", scale=2.0, start="init")  # Pull.__init__ takes no start: not passed to it
    assert loss.scale == 2.0
    objective = build_objective([{"loss": "_reg_pull", "args": {"scale": 2.0, "start": "init"}}])
    [term] = objective.terms
    assert term.start == "init" and term.teacher is None and term.student == "weights"
    [term] = build_objective([{"loss": "_reg_pull"}]).terms
    assert term.start == "stage"  # the default
    # a loss without a start contract: 'start' is an ordinary argument, and Scaled takes none
    registered("_reg_scaled")(Scaled)
    assert constructor_args("_reg_scaled", {"start": "init"}) == {"start": "init"}
    with pytest.raises(KDistillError, match="bad arguments.*start"):
        build_loss("_reg_scaled", start="init")
    [term] = build_objective([{"loss": "_reg_scaled"}]).terms
    assert term.start is None


def test_forward_gets_the_teacher_and_start_detached(registered):
    seen = {}

    class Record(nn.Module):
        def forward(self, student, teacher=None, target=None, start=None):
            seen["teacher"], seen["start"] = teacher, start
            first = teacher[0] if isinstance(teacher, tuple) else teacher
            return (student * first).sum() + sum((p * student).sum() for p in start)

    registered("_reg_record", Contract(start=True))(Record)
    loss = build_loss("_reg_record")
    student = torch.tensor([1.0, 2.0], requires_grad=True)
    teacher = torch.tensor([3.0, 5.0], requires_grad=True)
    start = [torch.tensor([7.0, 11.0], requires_grad=True)]
    value = loss(student, teacher, start=start)
    assert value.item() == 1 * 3 + 2 * 5 + 1 * 7 + 2 * 11
    assert not seen["teacher"].requires_grad and not seen["start"][0].requires_grad
    assert isinstance(seen["start"], list)
    value.backward()
    assert student.grad.tolist() == [3 + 7, 5 + 11]  # the student learns
    assert teacher.grad is None and start[0].grad is None  # the teacher and theta_0 do not
    # a tuple of teacher features (several taps) arrives as a tuple, each detached
    pair = (torch.ones(2, requires_grad=True), torch.zeros(2, requires_grad=True))
    loss(student, pair, start=start).backward()
    assert isinstance(seen["teacher"], tuple) and not any(t.requires_grad for t in seen["teacher"])
    assert pair[0].grad is None


def test_argument_values_are_checked_against_the_constructor_types():
    from kdistill.losses import build_loss

    assert build_loss("kd", temperature=4).temperature == 4.0  # an int for a float is that float
    for bad, words in (({"temperature": "warm"}, "temperature='warm'"), ({"alpha": [1]}, r"alpha=\[1\]"),
                       ({"temperature": float("nan")}, "finite")):
        with pytest.raises(KDistillError, match=words):
            build_loss("kd", **bad)


def test_a_class_registered_twice_is_wrapped_once(registered):
    registered("_reg_twice_a")(Scaled)
    forward = Scaled.forward
    registered("_reg_twice_b")(Scaled)
    assert Scaled.forward is forward


def test_an_argument_to_a_loss_without_a_constructor_is_one_line():
    with pytest.raises(KDistillError, match="loss 'sp': bad arguments .*it takes no arguments"):
        build_loss("sp", normalize=True)
