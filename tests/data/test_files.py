"""Sources read from files need data.path; each reads its own data.files fields."""

import pytest

from kdistill.data.files import FileData
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec, load_recipe


def _recipe(**data):
    return {"data": data, "student": {"model": "mlp"}, "stages": [{"name": "s"}]}


def test_a_file_source_needs_a_path():
    with pytest.raises(KDistillError, match="^recipe: data: source 'npy' reads files: set data.path$"):
        load_recipe(_recipe(source="npy"))
    spec = DataSpec(source="npy", path="x.npy", files={"test": 5})
    assert isinstance(spec, FileData) and (spec.files.test, spec.files.test_path) == (5, None)


def test_another_file_sources_field_is_refused_unless_at_its_default():
    with pytest.raises(KDistillError, match="^recipe: data: data.files.labels applies only to source 'npy', not "
                                            "'image_folder'; drop data.files.labels$"):
        load_recipe(_recipe(source="image_folder", path="p", files={"labels": "y.npy"}))
    spec = load_recipe(_recipe(source="image_folder", path="p", files={"labels": None, "path_column": "f"})).data
    assert spec.files.path_column == "f" and "labels" not in type(spec.files).model_fields
