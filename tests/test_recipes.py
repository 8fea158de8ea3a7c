"""Every recipe shipped in the repo validates, with its taps and losses known."""

from pathlib import Path

import pytest

from kdistill.cli import demo_recipe
from kdistill.recipe import load_recipe

ROOT = Path(__file__).parents[1]
RECIPES = sorted((ROOT / "recipes").glob("**/*.yaml")) + sorted((ROOT / "kdistill" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    if recipe.teacher is not None and recipe.teacher.weights:
        assert Path(recipe.teacher.weights).is_file(), recipe.teacher.weights


def test_demo_recipe_is_packaged():
    assert demo_recipe().is_file() and load_recipe(demo_recipe()).name == "demo"
