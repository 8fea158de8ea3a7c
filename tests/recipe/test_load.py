"""Reading a recipe tree, validating it, and a located error worded as the schema's."""

import pytest

from kdistill.errors import KDistillError
from kdistill.recipe.load import located_error, read_tree, validate


def test_read_tree_applies_overrides_to_a_copy():
    given = {"stages": [{"name": "a", "epochs": 1}]}
    tree = read_tree(given, ["stages.a.epochs=3", "seed=7"])
    assert tree["stages"][0]["epochs"] == 3 and tree["seed"] == 7
    assert given["stages"][0]["epochs"] == 1


def test_located_errors_read_as_validation_errors():
    with pytest.raises(KDistillError) as err:
        validate({"stages": [{"name": "a", "epochs": "three"}]})
    assert str(err.value) == ("recipe: stages.0.epochs: Input should be a valid integer, unable to parse string as "
                              "an integer (got 'three')")
    assert str(located_error(("stages", 0, "loss", 1), "bad")) == "recipe: stages.0.loss.1: bad"
    assert str(located_error(("task",), "bad", "x")) == "recipe: task: bad (got 'x')"
    assert str(located_error((), "bad")) == "recipe: bad"
