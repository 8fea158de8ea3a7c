"""The recipe: read (``load.py``), validated against the schema (``schema.py``), then checked
against the registries (``checks.py``).

Lower layers (data, models, train) import ``kdistill.recipe.schema``; importing it runs this
file first, so this file imports only the schema layer (schema, load, the source registry) and
reaches the checks, which need the loss and family registries, when a recipe is loaded.
"""

from __future__ import annotations

from pathlib import Path

from kdistill.recipe.load import (MAX_DEPTH, MAX_OVERRIDE_CHARS, MAX_RECIPE_BYTES, MAX_VALUES, apply_override,
                                  dump_recipe, parse_override, read_recipe_file, read_tree, read_yaml, validate)
from kdistill.recipe.schema import (AugmentSpec, CacheSpec, CheckpointSpec, DataSpec, EmbeddingSpec, LoaderSpec,
                                    ModelSpec, OptimizerSpec, Recipe, ScheduleSpec, Section, StageSpec, SubnetSpec,
                                    TermSpec)
from kdistill.recipe.sources import SOURCES, register_source

__all__ = ["MAX_DEPTH", "MAX_OVERRIDE_CHARS", "MAX_RECIPE_BYTES", "MAX_VALUES", "SOURCES", "AugmentSpec",
           "CacheSpec", "CheckpointSpec", "DataSpec", "EmbeddingSpec", "LoaderSpec", "ModelSpec", "OptimizerSpec",
           "Recipe", "ScheduleSpec", "Section", "StageSpec", "SubnetSpec", "TermSpec", "apply_override",
           "dump_recipe", "load_recipe", "parse_override", "read_recipe_file", "read_yaml", "register_source",
           "validate"]


def load_recipe(source: str | Path | dict | Recipe, overrides: list[str] = ()) -> Recipe:
    """Load a recipe from a YAML file, a dict or a Recipe, apply overrides, validate it against
    the schema and check it against the registries.

    Relative weight paths in a file are resolved against the file's folder.
    """
    from kdistill.recipe.checks import check_recipe

    return check_recipe(validate(read_tree(source, overrides)))
