"""A Hugging Face image model's ``preprocessor_config.json``: the resize, crop and
normalisation its image processor applies, read as plain JSON (no ``transformers`` needed), so
that a ``hf_vision`` teacher's inputs are decoded (in the workers) and normalised (on the
device) as it expects."""

from __future__ import annotations

import json
from pathlib import Path

from kdistill.data.preprocess import Preprocess
from kdistill.errors import KDistillError

PROCESSOR_FILE = "preprocessor_config.json"
CONVNEXT_WARP_FROM = 384  # ConvNeXt's processor: from this shortest_edge up it resizes with no crop


def read_image_processor(folder) -> dict | None:
    """What a Hugging Face image model folder's ``preprocessor_config.json`` asks of its inputs,
    read as plain JSON (no ``transformers`` import).

    Returns None when the folder has no such file, else a dict:
        mean, std: the per-channel normalisation (lists of floats), None when ``do_normalize``
            is false or the file gives none.
        rescale: the factor pixels are multiplied by first (``rescale_factor``, 1/255 by default),
            None when ``do_rescale`` is false.
        size: the shorter side images are resized to, an int (``size.shortest_edge`` or a bare
            int); with ``crop_pct`` (ConvNeXt, ResNet) ``shortest_edge / crop_pct`` below 384;
            ``(height, width)`` for a ``size`` of height and width (ViT's processors resize to
            exactly that, aspect not kept); None when ``do_resize`` is false.
        crop: the side of the centre crop (``crop_size.height`` or an int) when
            ``do_center_crop``; with ``crop_pct``, ``shortest_edge``; else None.
    Raises:
        KDistillError when the file is not a JSON object.
    """
    file = Path(folder) / PROCESSOR_FILE
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise KDistillError(f"{file}: cannot read it as JSON ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); restore the model folder's "
                            "preprocessor_config.json.") from None
    if not isinstance(config, dict):
        raise KDistillError(f"{file}: holds a JSON {type(config).__name__}, not an object; restore the model "
                            "folder's preprocessor_config.json.")
    normalize = config.get("do_normalize", True)
    mean, std = _channels(config.get("image_mean")), _channels(config.get("image_std"))
    if not normalize or mean is None or std is None:
        mean = std = None
    rescale = None
    if config.get("do_rescale", True):
        factor = config.get("rescale_factor", 1 / 255)
        rescale = float(factor) if isinstance(factor, (int, float)) else 1 / 255
    edge = _height_width(config.get("size")) or _side(config.get("size"))
    size = edge if config.get("do_resize", True) else None
    crop = _side(config.get("crop_size")) if config.get("do_center_crop", False) else None
    crop_pct = config.get("crop_pct")
    if crop is None and isinstance(size, int) and isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1:
        kind = str(config.get("image_processor_type") or config.get("feature_extractor_type") or "")
        if kind.startswith("ConvNext") and size >= CONVNEXT_WARP_FROM:
            crop = size  # resized to size x size with no crop: a square image the same
        else:
            size, crop = int(size / crop_pct), size
    return {"mean": mean, "std": std, "rescale": rescale, "size": size, "crop": crop}


def _channels(value) -> list[float] | None:
    """A per-channel list of floats from a list or a single number (None if neither)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return None


def _height_width(value) -> tuple[int, int] | None:
    """``(height, width)`` of a ``size`` dict that gives both (and no shortest_edge), else None."""
    if not isinstance(value, dict) or "shortest_edge" in value:
        return None
    sides = [value.get("height"), value.get("width")]
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        return sides[0], sides[1]
    return None


def _side(value) -> int | None:
    """The side of a ``size`` / ``crop_size`` entry: an int, or a dict's shortest_edge or height."""
    if isinstance(value, dict):
        value = value.get("shortest_edge", value.get("height"))
    if isinstance(value, (list, tuple)) and value:  # (height, width) in some old configs
        value = value[0]
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def teacher_image_processor(recipe) -> dict | None:
    """The image processor config saved with a ``hf_vision`` teacher's folder (resize, crop,
    mean, std), or None."""
    teacher = recipe.teacher if recipe is not None else None
    if teacher is None or teacher.model != "hf_vision" or not teacher.args.get("path"):
        return None
    folder = Path(str(teacher.args["path"])).expanduser()
    return read_image_processor(folder) if folder.is_dir() else None


def processor_preprocess(recipe) -> Preprocess | None:
    """A ``hf_vision`` teacher's normalisation as a Preprocess (pixels divided by 1 / rescale)."""
    processor = teacher_image_processor(recipe)
    if not processor or processor.get("mean") is None:
        return None
    rescale = processor.get("rescale")
    return Preprocess(1.0 / rescale if rescale else 1.0, tuple(processor["mean"]), tuple(processor["std"]))




def teacher_view(spec, recipe):
    """The data spec of an image source (``data.images``) with a ``hf_vision`` teacher's own
    resize and crop where the recipe sets neither (ViT's processors squash to [height, width], no
    crop; a shorter side without a crop: cropped square)."""
    processor = teacher_image_processor(recipe)
    if not processor or spec.images.size is not None or spec.images.crop is not None:
        return spec
    size = processor.get("size")
    return spec.model_copy(update={"images": spec.images.model_copy(
        update={"size": size, "crop": processor.get("crop") or (size if isinstance(size, int) else None)})})
