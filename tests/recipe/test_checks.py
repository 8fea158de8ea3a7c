"""The checks that need the loss registry run after the schema, with the schema's wording."""

import pytest

from kdistill.errors import KDistillError
from kdistill.recipe.checks import check_recipe
from kdistill.recipe.load import validate


def _recipe(**stage):
    return validate({"student": {"model": "mlp"}, "stages": [{"name": "a"}, {"name": "b", **stage}]})


@pytest.mark.parametrize("stage, message", [
    ({"loss": [{"loss": "kd"}]}, "^recipe: stages.1 \\(b\\) uses a teacher loss but no teacher is set$"),
    ({"loss": [{"loss": "kd", "args": {"temperature": -1}}]}, "^recipe: stages.1.loss.0: "),
    ({"loss": [{"loss": "l2_start", "args": {"start": "c"}}]}, "start 'c' must be init, stage or an earlier stage"),
    ({"loss": [{"loss": "k_d"}]}, "^loss: unknown name 'k_d'. Did you mean kd"),
])
def test_registry_checks_refuse(stage, message):
    recipe = _recipe(**stage)  # the schema passes it
    with pytest.raises(KDistillError, match=message):
        check_recipe(recipe)


def test_a_sound_recipe_passes_unchanged():
    recipe = _recipe(loss=[{"loss": "l2_start", "args": {"start": "a"}}, {"loss": "ce"}])
    assert check_recipe(recipe) is recipe
