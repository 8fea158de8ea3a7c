"""The documentation site builds without a warning (a broken link, a missing page, a page left out
of the nav), every recipe field has a description, and docs/reference/recipe.md is what
``python docs/recipe_reference.py`` writes from the schema now."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def reference_module():
    spec = importlib.util.spec_from_file_location("recipe_reference", ROOT / "docs" / "recipe_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_field_has_a_description():
    assert reference_module().missing_descriptions() == []


def test_the_recipe_reference_is_up_to_date():
    module = reference_module()
    assert module.PAGE.read_text(encoding="utf8") == module.page(), (
        "docs/reference/recipe.md differs from the schema; run python docs/recipe_reference.py")


def test_a_field_without_a_description_is_found(monkeypatch):
    module = reference_module()
    from kdistill.recipe.schema import AugmentSpec

    monkeypatch.setattr(AugmentSpec.model_fields["shift"], "description", None)
    assert module.missing_descriptions() == ["stages[].augment.shift"]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="pip install -e '.[docs]'")
def test_the_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    # no -q: it hides the warnings that --strict counts, and the build passes with them
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "api" / "index.html").read_text(encoding="utf8").count(
        'id="kdistill.run"') == 1  # mkdocstrings found the code
