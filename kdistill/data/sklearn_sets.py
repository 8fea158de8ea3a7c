"""scikit-learn's bundled digits: 1,797 8x8 images, small enough for tests in seconds."""

from __future__ import annotations

import numpy as np

from pydantic import field_validator

from kdistill.data.arrays import ArraySource
from kdistill.data.preprocess import stored_arrays
from kdistill.recipe.schema import DataSpec, no_path
from kdistill.recipe.sources import register_source

DIVIDE_BY = 16.0  # sklearn's digits are 0..16 ints (held as float64); the loader gives them in [0, 1]


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[ArraySource, ArraySource]:
    """Digits as ``(N, 1, 8, 8)`` images in [0, 1], split into (train, test), stratified."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / DIVIDE_BY)[:, None]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return ArraySource(x_tr, y_tr, 10, DIVIDE_BY), ArraySource(x_te, y_te, 10, DIVIDE_BY)


class DigitsData(DataSpec):
    """``digits``: no options; the data ships with scikit-learn."""

    @field_validator("path")
    @classmethod
    def _no_path(cls, value):
        return no_path("digits", value, "ships with scikit-learn")

    def raw_inputs(self, input_shape: list):
        return stored_arrays("float64", "0..16 as sklearn.datasets.load_digits().images holds them", input_shape)


def load_digits_data(spec: DigitsData, recipe=None) -> tuple[ArraySource, ArraySource]:
    return load_digits()


register_source("digits", DigitsData, tasks=("classify", "embed"), loader=load_digits_data)
