"""data.images.size: an int (the shorter side, aspect kept) or [height, width] (squashed to exactly
that), in the decoded views and in what the exported student.json says of them."""

import numpy as np
import pytest
import torch
from PIL import Image

from kdistill.data.image_folder import read_images
from kdistill.data.images import decode_image
from kdistill.data.preprocess import Preprocess, input_steps
from kdistill.errors import KDistillError
from kdistill.data.images import ImageSpec
from kdistill.recipe import DataSpec, load_recipe

CNN = {"model": "cnn", "args": {"in_channels": 3, "num_classes": 2, "channels": [4], "image_size": 8}}


def _halves(path, w, h):
    """A PNG whose left half is red and right half blue."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2:, 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def test_height_width_squashes_the_whole_image(tmp_path):
    wide = _halves(tmp_path / "wide.png", 40, 10)
    squashed = decode_image(wide, ImageSpec(size=[6, 8]))
    assert squashed.shape == (3, 6, 8)  # [height, width], aspect not kept
    assert squashed[0, :, :3].min() > 200 and squashed[2, :, 5:].min() > 200  # both halves kept, nothing cut
    assert decode_image(wide, ImageSpec(size=6)).shape == (3, 6, 24)  # an int: the shorter side, aspect kept


def test_images_of_different_sizes_form_a_batch_at_height_width(tmp_path):
    for i, (w, h) in enumerate([(40, 10), (9, 30), (16, 16)]):
        _halves(tmp_path / "pics" / ("a" if i % 2 else "b") / f"{i}.png", w, h)
    spec = DataSpec(source="image_folder", path=str(tmp_path / "pics"), images={"size": [12, 10]})
    source = read_images(tmp_path / "pics", spec, "data.path")
    assert source.fetch(torch.arange(3)).shape == (3, 3, 12, 10)  # the evaluation / teacher view


def _recipe(size, crop=None):
    images = {"size": size, **({"crop": crop} if crop else {})}
    return load_recipe({"name": "e", "data": {"source": "image_folder", "path": "pics", "images": images},
                        "student": CNN, "stages": [{"name": "s", "train": "student", "data": "labelled",
                                                    "loss": [{"loss": "ce"}]}]})


def test_student_json_records_the_resize():
    steps = input_steps(_recipe([12, 10]), Preprocess(255.0), [None, 3, 12, 10])
    assert steps["raw_input"]["dtype"] == "image"
    decode = steps["preprocess"][0]
    assert decode["op"] == "decode_image" and decode["mode"] == "rgb" and decode["crop"] is None
    assert decode["resize"] == {"height": 12, "width": 10, "interpolation": "bilinear"}
    assert [s["op"] for s in steps["preprocess"][1:]] == ["cast", "divide"]
    kept = input_steps(_recipe(16, crop=12), Preprocess(255.0), [None, 3, 12, 12])["preprocess"][0]
    assert kept["resize"] == {"shorter_side": 16, "interpolation": "bilinear"}
    assert kept["crop"] == {"height": 12, "width": 12}


@pytest.mark.parametrize("size", [[0, 4], [4, 5, 6], "big", 0, [4.5, 3], True])
def test_a_bad_size_is_one_line(size):
    with pytest.raises(KDistillError, match="data.images.size: .* neither a side in pixels") as err:
        _recipe(size)
    assert "\n" not in str(err.value)


def test_a_vit_processors_height_and_width_squash_the_images(tmp_path):
    import json

    from kdistill.data.load import load_sources

    for i, (w, h) in enumerate([(40, 10), (9, 30), (16, 16), (20, 12)]):
        _halves(tmp_path / "pics" / ("a" if i % 2 else "b") / f"{i}.png", w, h)
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 12, "width": 10}, "do_resize": True}))
    recipe = load_recipe({"name": "v", "data": {"source": "image_folder", "path": str(tmp_path / "pics"),
                                                "files": {"test": 2}},
                          "teacher": {"model": "hf_vision", "args": {"path": str(vit)}}, "student": CNN,
                          "stages": [{"name": "s", "data": "labelled", "loss": [{"loss": "kd"}]}]})
    train, _ = load_sources(recipe)
    assert train.fetch(torch.arange(len(train))).shape == (len(train), 3, 12, 10)  # squashed, nothing cropped
