"""``kdistill cache``: the teacher outputs a recipe's stages will read, computed ahead of the run
into the disk caches the run then finds (through the same ``TeacherSource``, hence the same keys)."""

from __future__ import annotations

from pathlib import Path

from kdistill.errors import KDistillError
from kdistill.pipeline import build_pipeline
from kdistill.progress import shown
from kdistill.recipe import Recipe, load_recipe
from kdistill.train.cache import verify_cache
from kdistill.train.teacher import teacher_source


def cache_recipe(recipe: Recipe | dict | str | Path, overrides: list[str] = (), verify: bool = False,
                 progress: bool = True) -> list[dict]:
    """Build (or find) the disk caches of teacher outputs that the recipe's stages ask for
    (``cache:``), as ``run`` would, without training; with ``verify``, compare each with the
    live teacher on a sample; ``progress``: bars while outputs are computed (``kdistill.progress``).
    Returns one dict a cache: stage, folder, size, differences."""
    with shown(progress):
        return _build_caches(load_recipe(recipe, list(overrides)), verify)


def _build_caches(recipe: Recipe, verify: bool) -> list[dict]:
    if recipe.trains("teacher"):
        raise KDistillError("cache: the recipe trains its teacher, so its outputs are known only during the run; "
                            "train the teacher in its own recipe and load its weights.")
    if not any(s.cache is not None for s in recipe.stages):
        raise KDistillError("cache: no stage of the recipe has a 'cache' section; add e.g. "
                            "stages.<name>.cache={dir: .kdistill/cache} to the stages that should use one.")
    pipeline = build_pipeline(recipe)
    teacher = pipeline.models["teacher"]
    done = []
    for i, stage in enumerate(recipe.stages):
        objective = pipeline.objectives[stage.name]
        if stage.cache is None or not objective.uses_teacher:
            continue
        x, _ = pipeline.stage_data(stage)
        source = teacher_source(teacher, objective, x, stage, recipe.seed + i, pipeline.device)
        source.close()
        cache = source.store
        entry = {"stage": stage.name, "folder": str(cache.folder), "samples": cache.n, "views": cache.views,
                 "taps": cache.names, "bytes": cache.meta["bytes"]}
        if verify:
            entry["max_abs_diff"] = verify_cache(cache, teacher, x, pipeline.device, seed=recipe.seed)
        done.append(entry)
    return done
