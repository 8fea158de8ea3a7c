"""The preprocessing a model expects of its raw inputs: a fixed division (255 for IDX images,
16 for scikit-learn's digits), then a per-channel standardisation ``(x - mean) / std``.

kdistill records it with the weights it writes (one JSON string under the safetensors metadata
key ``preprocess``) and reads it back when it loads a teacher's weights, so that a student is
trained, and exported, on the inputs its teacher was trained on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from kdistill.errors import KDistillError
from kdistill.paths import user_path

PREPROCESS_KEY = "preprocess"  # the safetensors metadata key holding Preprocess.to_metadata()'s JSON

@dataclass(frozen=True)
class Preprocess:
    """Raw inputs -> model inputs: divide by ``divide_by``, then ``(x - mean[c]) / std[c]`` on axis 1.

    Args:
        divide_by: the fixed division of the raw inputs (1: none). ``None`` in weights written
            before it was recorded (mean and std alone): the inputs as kdistill's loader gave them.
        mean, std: one value per channel (axis 1), or ``None``: no standardisation.
    """

    divide_by: float | None = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def standardizes(self) -> bool:
        return self.mean is not None

    def relative_to(self, divided_by: float) -> "Preprocess":
        """The preprocessing of values already divided by ``divided_by``: the rest of the division."""
        rest = (self.divide_by or divided_by) / divided_by
        return Preprocess(rest, self.mean, self.std)

    @classmethod
    def fit_batches(cls, batches, divide_by: float = 1.0) -> "Preprocess":
        """Per-channel mean and std (as ``fit``) accumulated over batches of inputs in units, in
        float64: statistics of data that never sits in memory at once."""
        total = total_sq = None
        count = 0
        for x in batches:
            x = x.double()
            x = x.movedim(1, -1).reshape(-1, x.shape[1])  # (values, channels); (N, D): D features
            total = x.sum(0) if total is None else total + x.sum(0)
            total_sq = x.pow(2).sum(0) if total_sq is None else total_sq + x.pow(2).sum(0)
            count += len(x)
        if not count:
            return cls(divide_by)
        mean = total / count
        var = (total_sq - count * mean.pow(2)) / max(1, count - 1)
        std = var.clamp_min(0).sqrt().clamp_min(1e-6)
        return cls(divide_by, tuple(mean.tolist()), tuple(std.tolist()))

    @classmethod
    def fit(cls, x: torch.Tensor, divide_by: float = 1.0) -> "Preprocess":
        """Per-channel mean and std of inputs ``x`` ``(N, C, ...)`` (or ``(N, D)``: one channel),
        already divided by ``divide_by``."""
        dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 2 else [0]
        mean = x.mean(dim=dims).flatten().tolist()
        std = x.std(dim=dims).clamp_min(1e-6).flatten().tolist()
        return cls(divide_by, tuple(mean), tuple(std))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel (axis 1) of inputs already divided; ``x`` if none."""
        if self.mean is None:
            return x
        mean, std = _channel_constants(self.mean, self.std, x.dim(), x.device)
        return (x - mean) / std

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """The model inputs for ``raw`` inputs: float32, divided, standardised (on ``raw``'s device)."""
        x = raw.float()
        if self.divide_by not in (None, 1.0):
            x = x / self.divide_by
        return self.standardize(x)

    def to_dict(self) -> dict:
        return {"divide_by": self.divide_by, "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        mean, std = data.get("mean"), data.get("std")
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise KDistillError(f"preprocess: mean {mean} and std {std} must both be lists of one value a channel; "
                                "rewrite the weights' metadata or train the model again.")
        return cls(data.get("divide_by"), tuple(mean) if mean is not None else None,
                   tuple(std) if std is not None else None)

    @classmethod
    def from_info(cls, info: dict) -> "Preprocess | None":
        """The preprocessing in a run's data info (``summary.json["data"]``): its ``preprocess``,
        or the ``mean``/``std`` lists earlier versions wrote; ``None`` if neither."""
        if info.get("preprocess") is not None:
            return cls.from_dict(info["preprocess"])
        if "mean" in info and "std" in info:
            return cls.from_dict({"divide_by": None, "mean": info["mean"], "std": info["std"]})
        return None

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata entry: ``{"preprocess": "<JSON>"}``, one key."""
        return {PREPROCESS_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None) -> "Preprocess | None":
        """The preprocessing recorded in safetensors metadata: the ``preprocess`` key, or the
        ``mean``/``std`` keys (JSON lists) that earlier kdistill versions wrote; ``None`` if neither."""
        metadata = metadata or {}
        if PREPROCESS_KEY in metadata:
            return cls.from_dict(json.loads(metadata[PREPROCESS_KEY]))
        if "mean" in metadata and "std" in metadata:
            return cls.from_dict({"divide_by": None, "mean": json.loads(metadata["mean"]),
                                  "std": json.loads(metadata["std"])})
        return None

    def steps(self) -> list[dict]:
        """The division and standardisation as steps a user applies to float32 inputs, in order."""
        steps = []
        if self.divide_by not in (None, 1.0):
            steps.append({"op": "divide", "by": self.divide_by})
        if self.mean is not None:
            steps.append({"op": "subtract", "value": list(self.mean), "axis": 1})
            steps.append({"op": "divide", "by": list(self.std), "axis": 1})
        return steps


@functools.lru_cache(maxsize=32)
def _channel_constants(mean: tuple, std: tuple, dims: int, device: torch.device):
    """``mean`` and ``std`` as tensors broadcast over axis 1, made once per device (not every batch)."""
    shape = (1, -1, *[1] * (dims - 2))
    return tuple(torch.tensor(v, device=device).view(shape) for v in (mean, std))


def read_preprocess(path: str | Path, owner: str = "teacher") -> Preprocess | None:
    """The preprocessing recorded in a .safetensors file's metadata, or ``None`` if it records none
    (or is not a .safetensors file: loading the weights says what is wrong with it)."""
    from safetensors import SafetensorError, safe_open

    path = user_path(path, f"{owner}.weights")
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
    except (SafetensorError, OSError) as err:
        raise KDistillError(f"{owner}.weights: cannot read {path}: {err}") from None
    try:
        return Preprocess.from_metadata(metadata)
    except (ValueError, TypeError) as err:
        raise KDistillError(f"{owner}.weights: {path} records unreadable preprocessing ({err}); "
                            "set data.normalize to data or none.") from None


def input_steps(recipe, preprocess: Preprocess | None, input_shape: list) -> dict:
    """What a run's models take, from raw inputs: ``{"raw_input": {dtype, shape, values},
    "preprocess": [steps]}``, the steps applied in order to reproduce the run's inputs.

    Steps: ``decode_image`` (image sources: to ``uint8 (N, C, H, W)`` pixels, see ``decode_step``),
    ``cast`` (to ``dtype``), ``reshape`` (to ``shape``, -1 the batch), ``divide`` (``by``
    a number, or by one value a channel on ``axis``), ``subtract`` (``value``, one a channel on
    ``axis``) and, for text, ``tokenize``.

    Args:
        recipe: the run's recipe; preprocess: the run's (``None`` for token ids);
        input_shape: the model's input shape, ``[None, ...]``.
    """
    if preprocess is None:  # token ids of a text source
        from kdistill.data.text_sources import TextData, teacher_tokenizer

        given = recipe.data.text.tokenizer if isinstance(recipe.data, TextData) else None
        tokenizer = given or teacher_tokenizer(recipe)
        return {"raw_input": {"dtype": "str", "shape": [None], "values": "one text a sample"},
                "preprocess": [{"op": "tokenize", "tokenizer": tokenizer, "max_length": recipe.data.text_length(),
                                "output": "input_ids and attention_mask stacked on axis 1: (N, 2, L) int64, "
                                          "padded to the longest text"}]}
    raw, before, after = recipe.data.raw_inputs(input_shape) or (
        {"dtype": "float32", "shape": list(input_shape), "values": "the inputs as passed to kdistill.run"}, [], [])
    return {"raw_input": raw, "preprocess": [*before, {"op": "cast", "dtype": "float32"}, *after, *preprocess.steps()]}


def stored_arrays(dtype: str, values: str, input_shape: list) -> tuple[dict, list[dict], list[dict]]:
    """``DataSpec.raw_inputs`` of a built-in array source: ``(N, H, W)`` arrays of ``dtype``
    holding ``values``, to which the loader adds the channel axis (``input_shape``: the model's)."""
    raw = {"dtype": dtype, "shape": [None, *input_shape[2:]], "values": values}
    return raw, [], [{"op": "reshape", "shape": [-1, *input_shape[1:]]}]


def decode_step(images) -> dict:
    """How an image source's files become pixels (the recipe's ``data.images``, the evaluation
    view): ``{"op": "decode_image", mode, resize, crop, output}``; ``resize``: ``{"shorter_side": n}``
    (aspect kept) or ``{"height": h, "width": w}`` (exactly, aspect not kept), bilinear, or None;
    ``crop``: the centre crop's ``{"height", "width"}``, or None."""
    size = images.size
    resize = (None if size is None else {"shorter_side": size} if isinstance(size, int)
              else {"height": size[0], "width": size[1]})
    if resize is not None:
        resize["interpolation"] = "bilinear"
    crop = {"height": images.crop, "width": images.crop} if images.crop is not None else None
    return {"op": "decode_image", "mode": images.mode, "resize": resize, "crop": crop,
            "output": "uint8 (N, C, H, W): C = 3 (RGB, alpha dropped) or 1 (grayscale), EXIF rotation applied"}
