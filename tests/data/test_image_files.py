"""What image file sources share: data.images, random views, the loader's wrapping."""

from kdistill.data.image_files import ImageFilesData, load_image_files
from kdistill.recipe import DataSpec, load_recipe


def test_random_views_come_from_data_images():
    assert DataSpec(source="hf_dataset", path="d", images={"flip": True}).random_views()
    spec = DataSpec(source="image_folder", path="d", images={"crop": 4})
    assert isinstance(spec, ImageFilesData) and not spec.random_views()
    assert not DataSpec(source="digits").random_views()


def test_the_loader_reads_the_spec_it_is_given_without_a_teacher():
    recipe = load_recipe({"data": {"source": "image_folder", "path": "d", "images": {"size": 6}},
                          "student": {"model": "mlp"}, "stages": [{"name": "s"}]})
    seen = []
    train, test = load_image_files(lambda path, spec: seen.append((path, spec)) or ("train", "test"),
                                   recipe.data, recipe)
    assert (train, test) == ("train", "test") and seen == [("d", recipe.data)]
