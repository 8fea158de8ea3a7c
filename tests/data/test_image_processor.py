"""read_image_processor (kdistill/models/hf_vision.py): a Hugging Face image model folder's
preprocessor_config.json, read as plain JSON, in the families' different shapes."""

import json

import pytest

from kdistill.errors import KDistillError
from kdistill.data.image_processor import read_image_processor

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _folder(tmp_path, config):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    return tmp_path


def test_vit_height_and_width(tmp_path):
    folder = _folder(tmp_path, {"image_processor_type": "ViTImageProcessor", "do_normalize": True,
                                "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                                "image_std": [0.5, 0.5, 0.5], "rescale_factor": 0.00392156862745098,
                                "size": {"height": 224, "width": 224}})
    assert read_image_processor(folder) == {"mean": [0.5] * 3, "std": [0.5] * 3, "rescale": pytest.approx(1 / 255),
                                            "size": (224, 224), "crop": None}  # squashed, as ViT's processor does


def test_convnext_shortest_edge_and_crop_pct(tmp_path):
    config = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_normalize": True,
              "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
              "size": {"shortest_edge": 224}}
    got = read_image_processor(_folder(tmp_path, config))
    assert (got["size"], got["crop"]) == (256, 224)  # resized to 224 / 0.875, centre-cropped to 224
    assert got["mean"] == IMAGENET_MEAN and got["std"] == IMAGENET_STD
    config["size"] = {"shortest_edge": 384}  # from 384 up ConvNeXt resizes to a square, no crop
    got = read_image_processor(_folder(tmp_path, config))
    assert (got["size"], got["crop"]) == (384, 384)


def test_centre_crop_and_old_int_sizes(tmp_path):
    folder = _folder(tmp_path, {"do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                                "size": {"shortest_edge": 256}, "image_mean": IMAGENET_MEAN,
                                "image_std": IMAGENET_STD})
    got = read_image_processor(folder)
    assert (got["size"], got["crop"], got["rescale"]) == (256, 224, pytest.approx(1 / 255))  # rescale by default
    folder = _folder(tmp_path, {"feature_extractor_type": "ViTFeatureExtractor", "size": 32, "crop_size": 28,
                                "do_center_crop": False, "image_mean": 0.5, "image_std": 0.25})
    got = read_image_processor(folder)
    assert (got["size"], got["crop"], got["mean"], got["std"]) == (32, None, [0.5], [0.25])


def test_no_normalize_no_rescale_no_resize(tmp_path):
    folder = _folder(tmp_path, {"do_normalize": False, "do_rescale": False, "do_resize": False,
                                "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "size": {"height": 64}})
    assert read_image_processor(folder) == {"mean": None, "std": None, "rescale": None, "size": None, "crop": None}


def test_no_file_gives_none_and_bad_json_fails_in_one_line(tmp_path):
    assert read_image_processor(tmp_path) is None
    assert read_image_processor(tmp_path / "missing") is None
    for text in ("{not json", "[1, 2]"):
        with pytest.raises(KDistillError, match="preprocessor_config.json") as err:
            read_image_processor(_folder(tmp_path, text))
        assert "\n" not in str(err.value)
