"""``kdistill check-data RECIPE [key=value ...]``: every file of a recipe's data decoded once
(``check_files``), the unreadable ones listed with their reasons, at most ``SHOWN`` of them, and
one summary line; an error (exit 2) when any cannot be read."""

from __future__ import annotations

from kdistill.data.check_files import SHOWN, check_sources
from kdistill.data.files import FileData
from kdistill.data.image_files import ImageFilesData
from kdistill.data.load import load_sources
from kdistill.errors import KDistillError, shown
from kdistill.recipe.schema import Recipe
from kdistill.recipe.sources import SOURCES


def check_recipe_data(recipe: Recipe, echo=print, workers: int | None = None) -> int:
    """``kdistill check-data``: decode every sample of a loaded recipe's file data (training and
    test sets) once, ``echo`` the first ``SHOWN`` unreadable ones with their reasons, then raise
    one line with the count; returns the number of samples checked when all decode."""
    spec = recipe.data
    if not isinstance(spec, FileData):
        readers = [name for name, info in SOURCES.items() if issubclass(info.spec, FileData)]
        raise KDistillError(f"check-data: data.source {shown(spec.source)} is not read from files, so there is nothing to "
                            f"decode; check-data reads {', '.join(readers)} data.")
    if isinstance(spec, ImageFilesData):  # see every file, skip none
        images = spec.images.model_copy(update={"skip_unreadable": False})
        recipe = recipe.model_copy(update={"data": spec.model_copy(update={"images": images})})
    train, test = load_sources(recipe)
    count, total = check_sources({"train": train, "test": test}, workers or spec.loader.workers or None, echo=echo)
    if count:
        where = f"the first {SHOWN} listed above" if count > SHOWN else "listed above"
        raise KDistillError(f"check-data: {count} of {total} samples cannot be read ({where}); fix or remove them, "
                            "or set data.images.skip_unreadable: true to leave them out of a run.")
    echo(f"check-data: all {total} samples decode ({len(train)} training, {len(test)} test)")
    return total
