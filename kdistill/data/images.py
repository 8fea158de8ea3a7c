"""Image decoding with Pillow, for the image file sources (image_folder, hf_dataset's images).

``decode_image`` turns a file, its bytes or a PIL image into ``uint8 (C, H, W)`` pixels as the
recipe's ``data.images`` asks: the plain view (resize the shorter side, centre crop) for
evaluation and teacher outputs, or a training view (a random resized crop, a flip) whose draws
all come from the generator it is given, so that a sample decodes the same way in any worker.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field, field_validator, model_validator

from kdistill.errors import KDistillError
from kdistill.recipe.schema import Section

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # image files the folder sources pick up
RATIO = (3 / 4, 4 / 3)  # random_crop: the range of aspect ratios (width / height) drawn
TRIES = 10  # random_crop: draws before falling back to the centre crop
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
ORIENTATION_INFO = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")  # where Pillow finds a rotation


class UnreadableImage(KDistillError):
    """An image that cannot be read or decoded: ``name`` (its path, or how it is named) and the
    short ``reason``; the message adds how to see every such file and how to skip them."""

    def __init__(self, name: str, reason: str | None = None):
        if reason is None:  # the whole message, as a DataLoader worker's error is rebuilt
            super().__init__(name)
            self.name = self.reason = name
            return
        self.name, self.reason = name, reason
        super().__init__(f"data: {name}: {reason}; check the file, or remove it from the data (kdistill check-data "
                         "RECIPE lists every unreadable file at once; data.images.skip_unreadable: true skips them).")


class ImageSpec(Section):
    """How image files are decoded (image_folder, and hf_dataset's image column), in the workers.

    Evaluation and teacher outputs see the plain view: resize, then centre crop. A training batch
    may instead draw a random resized crop and a flip, seeded by (seed, epoch, sample).
    """

    KIND = "image file"
    mode: Literal["rgb", "grayscale"] = Field("rgb", description="3 channels, or 1")
    size: int | tuple[int, int] | None = Field(None, description=(
        "an int: resize the shorter side to it (aspect kept); [height, width]: resize to exactly that (aspect not "
        "kept, squashed); default: as stored"))
    crop: int | None = Field(None, ge=1, description="centre crop (crop x crop) after resizing; default: no crop")
    random_crop: bool = Field(False, description=(
        "training batches: a random resized crop to crop x crop (needs crop)"))
    crop_scale: tuple[float, float] = Field((0.08, 1.0), description=(
        "random_crop: the area fraction of the image kept"))
    flip: bool = Field(False, description="training batches: a horizontal flip, half of the time")
    skip_unreadable: bool = Field(False, description=(
        "decode every file once when the data is loaded and leave out those that cannot be read (one warning "
        "line; the list goes to the run's skipped_files.txt); false: an unreadable file stops the run (kdistill "
        "check-data RECIPE lists them all at once)"))

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value):
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            return tuple(value)
        raise ValueError(f"{str(value)[:40]} is neither a side in pixels (an int >= 1: the shorter side, aspect "
                         "kept) nor [height, width] (two ints >= 1: resized to exactly that)")

    @model_validator(mode="after")
    def _crop_given(self) -> "ImageSpec":
        if self.random_crop and self.crop is None:
            raise ValueError("random_crop needs crop (the output size in pixels)")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {list(self.crop_scale)} must be two fractions 0 < low <= high <= 1")
        return self


def random_view(spec) -> bool:
    """Whether a training view of images decoded by ``spec`` (an ``ImageSpec``) is random."""
    return bool(spec.random_crop or spec.flip)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as ``uint8 (C, H, W)``: grayscale modes give ``C = 1``, every other mode
    ``C = 3`` (RGB; alpha dropped, palettes, CMYK and 16-bit images converted)."""
    img = _to_mode(img, "grayscale" if img.mode in GRAY_MODES else "rgb")
    a = np.array(img, dtype=np.uint8)  # (H, W) or (H, W, 3), a copy torch may own
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def decode_image(obj, spec, rng: np.random.Generator | None = None, what: str | None = None) -> torch.Tensor:
    """Decode one image as ``spec`` (the recipe's ``ImageSpec``) asks.

    Args:
        obj: a file path (str or Path), the encoded bytes of a file, a PIL image, or a dict with
            ``bytes`` and / or ``path`` (Hugging Face datasets' undecoded images).
        spec: mode (rgb: 3 channels, grayscale: 1), size (shorter side, aspect kept, bilinear;
            or [height, width], resized to exactly that),
            crop (centre crop), random_crop, crop_scale, flip.
        rng: None for the plain view; a generator for a training view, the only source of its
            random draws (a random resized crop when ``spec.random_crop``, else the plain view;
            then a horizontal flip half of the time when ``spec.flip``).
        what: how to name the image in an error (default: its path, or "image bytes").
    Returns:
        ``uint8 (C, H, W)`` pixels.
    Raises:
        KDistillError naming the image when it cannot be read or decoded.
    """
    return decode_batch([obj], spec, [rng], [what] if what else None)[0]


def decode_batch(objs: list, spec, rngs: list | None = None, names: list | None = None) -> torch.Tensor:
    """Images decoded as ``decode_image`` does, written straight into one ``uint8 (B, C, H, W)``
    batch (no tensor per image). ``rngs``: one generator (or None) an image; ``names``: how to
    name each image in an error. Images of different sizes fail in one line."""
    out = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EXIF / palette warnings: the pixels are what matter
        for i, obj in enumerate(objs):
            name = names[i] if names else _describe(obj)
            a = np.asarray(_decoded(obj, spec, rngs[i] if rngs else None, name))  # (H, W) or (H, W, 3)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if out is None:
                out = np.empty((len(objs), *a.shape), dtype=np.uint8)
            elif a.shape != out.shape[1:]:
                raise KDistillError(f"data: images of different sizes {tuple(out.shape[1:])} and {a.shape} ({name}) "
                                    "cannot form a batch; set data.images.size to [height, width], or size and crop (resize, then "
                                    "crop to one size).")
            out[i] = a
    if out is None:
        side = spec.crop or 0
        return torch.zeros((0, 3 if spec.mode == "rgb" else 1, side, side), dtype=torch.uint8)
    return torch.from_numpy(out)


def _decoded(obj, spec, rng: np.random.Generator | None, name: str) -> Image.Image:
    """One image, opened, in ``spec.mode``, resized and cropped (randomly with ``rng``), flipped."""
    img = _open(obj, name)
    try:
        img = _to_mode(img, spec.mode)
    except (OSError, ValueError, SyntaxError) as err:
        raise UnreadableImage(name, f"cannot decode the image ({_short(err)})") from None
    if rng is not None and spec.random_crop:
        img = _random_resized_crop(img, spec.crop, spec.crop_scale, rng)
    else:
        img = _plain(img, spec.size, spec.crop)
    if rng is not None and spec.flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _describe(obj) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return os.fsdecode(obj)
    if isinstance(obj, dict) and obj.get("path"):
        return str(obj["path"])
    if isinstance(obj, Image.Image):
        return "(a PIL image)"
    return "(image bytes)"


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


def _open(obj, name: str) -> Image.Image:
    """``obj`` decoded by Pillow, its EXIF orientation applied (a file is closed again)."""
    if isinstance(obj, dict):  # {"bytes": ..., "path": ...}: the bytes if there are any
        obj = obj.get("bytes") or obj.get("path")
    if isinstance(obj, Image.Image):
        return _orient(obj, in_place=False)  # the caller's image is left as it is
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _read(lambda: Image.open(io.BytesIO(bytes(obj))), name)
    if isinstance(obj, (str, os.PathLike)):
        return _read(lambda: Image.open(obj), name)
    raise KDistillError(f"data: cannot read an image from a {type(obj).__name__}; "
                        "give a file path, the file's bytes or a PIL image.")


def _read(opener, name: str) -> Image.Image:
    """The image ``opener()`` opens, decoded now (so a damaged file fails here, naming itself)."""
    try:
        with opener() as img:
            img.load()
            return _orient(img, in_place=True)
    except (FileNotFoundError, IsADirectoryError):
        raise UnreadableImage(name, "image file not found") from None
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not an image Pillow can read (JPEG, PNG, WebP, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImage(name, f"cannot decode the image ({_short(err)})") from None


def _orient(img: Image.Image, in_place: bool) -> Image.Image:
    """``img`` turned as its EXIF (or XMP) orientation says (the camera's rotation undone); an
    image without such metadata is returned as it is, unread."""
    if not hasattr(img, "tag_v2") and not any(key in img.info for key in ORIENTATION_INFO):
        return img
    try:
        turned = ImageOps.exif_transpose(img, in_place=in_place)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error):
        return img  # a damaged EXIF block: the pixels as stored
    return img if in_place else turned


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` as 8-bit "RGB" (mode rgb) or "L" (grayscale).

    Alpha is dropped (as torchvision's loaders do, so a teacher trained on them sees the same
    pixels), palettes are expanded, CMYK and YCbCr converted, and 16-bit, 32-bit integer and
    float images scaled to 0..255 rather than clipped.
    """
    target = "RGB" if mode == "rgb" else "L"
    if img.mode == target:
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = Image.fromarray(_to_bytes(np.array(img)), mode="L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    return img if img.mode == target else img.convert(target)


def _to_bytes(a: np.ndarray) -> np.ndarray:
    """High-depth grayscale pixels as uint8: 16-bit (any value over 255) divided down from
    0..65535, floats in [0, 1] multiplied up, anything else clipped to 0..255."""
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64))
        top = float(a.max()) if a.size else 0.0
        a = a * 255.0 if top <= 1.0 else a
    else:
        a = a.astype(np.int64)
        top = int(a.max()) if a.size else 0
        if 255 < top <= 65535:
            a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _plain(img: Image.Image, size: int | tuple[int, int] | None, crop: int | None) -> Image.Image:
    """The deterministic view: the shorter side resized to ``size`` (an int; ``(height, width)``:
    resized to exactly that, aspect not kept), then a centre ``crop``."""
    if isinstance(size, (tuple, list)):
        new = (int(size[1]), int(size[0]))  # Pillow's (width, height)
        if new != img.size:
            img = img.resize(new, Image.Resampling.BILINEAR)
    elif size is not None:
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        other = max(1, round(long * size / short))
        new = (size, other) if w <= h else (other, size)
        if new != img.size:
            img = img.resize(new, Image.Resampling.BILINEAR)
    if crop is not None:
        w, h = img.size
        left, top = round((w - crop) / 2), round((h - crop) / 2)
        img = img.crop((left, top, left + crop, top + crop))  # zeros outside a smaller image
    return img


def _random_resized_crop(img: Image.Image, out: int, scale, rng: np.random.Generator) -> Image.Image:
    """A region of ``img`` of random area (a fraction in ``scale``) and aspect ratio
    (log-uniform in 3/4..4/3), resized to ``out x out``; after ``TRIES`` draws that do not fit,
    the centre of the image with its aspect ratio clamped to that range."""
    w, h = img.size
    area = w * h
    low, high = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(low, high))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:
        ratio = w / h
        if ratio < RATIO[0]:
            cw, ch = w, round(w / RATIO[0])
        elif ratio > RATIO[1]:
            cw, ch = round(h * RATIO[1]), h
        else:
            cw, ch = w, h
        top, left = (h - ch) // 2, (w - cw) // 2
    return img.resize((out, out), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
