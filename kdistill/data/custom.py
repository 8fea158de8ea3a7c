"""``data.source: custom``: the data is passed from Python, ``run(recipe, data=(train, test))``
(``(x, y)`` arrays, a ``Source`` or a dataset of ``(input, label)`` items; see ``as_source``), so
the recipe names no file and there is no loader."""

from __future__ import annotations

from pydantic import field_validator

from kdistill.recipe.schema import DataSpec, no_path
from kdistill.recipe.sources import register_source


class CustomData(DataSpec):
    """``custom``: no options; ``data.path`` is refused."""

    @field_validator("path")
    @classmethod
    def _no_path(cls, value):
        return no_path("custom", value, "is passed from Python (run(recipe, data=(train, test)))")


register_source("custom", CustomData, tasks=("classify", "embed"), loader=None)
