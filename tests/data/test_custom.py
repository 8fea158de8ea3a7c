"""data.source: custom names no file and has no loader: its data comes from Python."""

import pytest
import torch

from kdistill.data.custom import CustomData
from kdistill.data.load import load_sources
from kdistill.errors import KDistillError
from kdistill.recipe import load_recipe


def test_custom_data_comes_from_python():
    recipe = load_recipe({"data": {"source": "custom"}, "student": {"model": "mlp"}, "stages": [{"name": "s"}]})
    assert isinstance(recipe.data, CustomData) and recipe.task == "classify"
    with pytest.raises(KDistillError, match=r"needs the data passed from Python: run\(recipe, data=\(train, test\)\)"):
        load_sources(recipe)
    train, test = load_sources(recipe, ((torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])),
                                        (torch.ones(2, 2), torch.tensor([1, 0]))))
    assert (len(train), len(test)) == (4, 2)
