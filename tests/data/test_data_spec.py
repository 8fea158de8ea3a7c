"""A data field the source does not read is an error naming it, not silently ignored."""

import pytest
import yaml

from kdistill.errors import KDistillError
from kdistill.recipe import dump_recipe, load_recipe


def _recipe(**data):
    return {"data": data, "student": {"model": "mlp"}, "stages": [{"name": "s"}]}


@pytest.mark.parametrize("data, message", [
    ({"source": "digits", "path": "/data"}, "data.path: does not apply to source 'digits'.*drop data.path"),
    ({"source": "custom", "path": "/data"}, "data.path: does not apply to source 'custom'.*run\\(recipe, data="),
    ({"source": "digits", "text": {"max_length": 32}}, "data.text: max_length applies only to the text sources"),
    ({"source": "fashion_mnist", "text": {"pos": "verb"}}, "data.text: pos applies only to the text sources"),
    ({"source": "csv", "path": "a.csv", "text": {"pos": "verb"}}, "data.text.pos applies only to source 'wordnet', not 'csv'"),
    ({"source": "text", "path": "a.txt", "text": {"examples": False}}, "data.text.examples applies only to source 'wordnet'"),
    ({"source": "wordnet", "text": {"text_column": "sentence"}}, "data.text.text_column applies only to source 'csv'"),
    ({"source": "text", "path": "a.txt", "text": {"label_column": None}}, "data.text.label_column applies only to source 'csv'"),
    ({"source": "csv", "path": "a.csv", "normalize": True}, "data.normalize: 'data' does not apply to source 'csv'"),
])
def test_fields_the_source_does_not_read_fail(data, message):
    with pytest.raises(KDistillError, match=message):
        load_recipe(_recipe(**data))


def test_fields_the_source_reads_and_defaults_pass():
    load_recipe(_recipe(source="csv", path="a.csv", text={"text_column": "t", "label_column": None, "test": 0.2}))
    load_recipe(_recipe(source="wordnet", text={"pos": "all", "examples": False, "max_length": 64}))
    load_recipe(_recipe(source="fashion_mnist", path="/mnist"))
    load_recipe(_recipe(source="digits", path=None, normalize="none"))
    load_recipe(_recipe(source="text", path="a.txt", normalize="none"))
    # a resolved recipe (recipe.yaml, a Recipe object) holds every field at its default: no error
    recipe = load_recipe(_recipe(source="digits"))
    assert load_recipe(recipe) == recipe
    assert load_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
