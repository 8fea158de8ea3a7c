"""The method catalogue (docs/reference/methods.md) is generated from the loss registry: the
committed page is the generator's output, and every registered loss documents itself."""

import inspect
import sys
from pathlib import Path

import pytest

from kdistill.catalogue import methods_page, package_losses
from kdistill.losses import LOSSES

PAGE = Path(__file__).parents[1] / "docs" / "reference" / "methods.md"


def test_the_committed_page_is_the_generators_output():
    assert PAGE.read_text(encoding="utf8") == methods_page(), (
        "docs/reference/methods.md is out of date: python -m kdistill.catalogue > docs/reference/methods.md")


def missing_docs(cls) -> list[str]:
    """What the catalogue would lack of a loss class: its own docstring, its module's."""
    missing = []
    if not (cls.__dict__.get("__doc__") or "").strip():  # not nn.Module's, which every loss inherits
        missing.append(f"{cls.__name__} has no docstring (its formula, what it reads)")
    if not inspect.getdoc(sys.modules[cls.__module__]):
        missing.append(f"module {cls.__module__} has no docstring (the method and its paper)")
    return missing


@pytest.mark.parametrize("name", package_losses())
def test_every_registered_loss_has_a_docstring_and_its_module_one(name):
    assert not missing_docs(LOSSES[name].cls), f"loss {name}: {missing_docs(LOSSES[name].cls)}"


def test_a_loss_without_a_docstring_is_caught():
    from torch import nn

    class Bare(nn.Module):
        def forward(self, student, teacher=None, target=None):
            return student.sum()

    assert missing_docs(Bare) == ["Bare has no docstring (its formula, what it reads)"]


def test_every_package_loss_is_on_the_page_and_a_loss_added_elsewhere_is_not(monkeypatch):
    page = PAGE.read_text(encoding="utf8")
    assert all(f"## `{name}`" in page for name in package_losses())
    assert len(package_losses()) >= 20

    class Undocumented:  # registered from outside the package (a user's module, a test)
        pass

    monkeypatch.setitem(LOSSES, "outside", LOSSES["kd"].__class__(Undocumented, LOSSES["kd"].contract))
    assert "outside" not in package_losses() and methods_page() == page
