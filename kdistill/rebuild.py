"""A finished run rebuilt from its directory: the recipe it ran, its models with the weights it
saved, and its data, for ``kdistill eval`` and ``kdistill export``."""

from __future__ import annotations

import json
from pathlib import Path

from kdistill.data import Preprocess, Splits
from kdistill.errors import KDistillError
from kdistill.models.weights import load_weights
from kdistill.paths import user_path
from kdistill.recipe import Recipe, load_recipe
from kdistill.setup import build_models, prepare_data, resolve_device


def run_preprocess(run_dir: Path) -> Preprocess | None:
    """The preprocessing a finished run used (``summary.json``'s data), ``None`` if it records none:
    a rebuilt run sees the inputs it was trained on, whatever its teacher's weights say today."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        return Preprocess.from_info(json.loads(path.read_text(encoding="utf8")).get("data", {}))
    except (ValueError, AttributeError, TypeError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise KDistillError(f"{path} is not the summary kdistill wrote (no readable data.preprocess); "
                            "run the recipe again to write the run directory.") from None


def rebuild_run(run_dir: str | Path, overrides: list[str] = (), roles=None,
                trust_code: bool = False) -> tuple[Recipe, dict, Splits, dict]:
    """A finished run's recipe, models (with their saved weights), data splits and data info.

    Args:
        roles: the models wanted (default all); the teacher's weights are read only if it is one.
        trust_code: allow models named by import path (``package.module:callable``), whose code
            runs when they are built; a run directory from elsewhere could name anything.
    """
    run_dir = user_path(run_dir, "run directory")
    if not (run_dir / "recipe.yaml").is_file():
        raise KDistillError(f"{run_dir} is not a finished run directory (no recipe.yaml).")
    recipe = load_recipe(run_dir / "recipe.yaml", list(overrides))
    skip_teacher = roles is not None and "teacher" not in roles
    if skip_teacher:  # the teacher's architecture may be needed (a student cut from it), its weights not
        for spec in (recipe.teacher, *recipe.teachers.values()):
            if spec is not None:
                spec.weights = None
    specs = [("teacher", recipe.teacher), ("student", recipe.student),
             *((f"teachers.{n}", t) for n, t in recipe.teachers.items())]
    for role, spec in specs:
        if spec is not None and spec.model and spec.model.startswith("(python)"):
            raise KDistillError(f"{run_dir}: its {role} was a Python module ({spec.model.split(' ', 1)[1]}), which "
                                "cannot be rebuilt from the recipe; load student.safetensors into it in Python.")
        if spec is not None and spec.model and ":" in spec.model and not trust_code:
            raise KDistillError(f"{run_dir}: its recipe builds the {role} with {spec.model!r}, which would import and "
                                "run that code; pass --trust-code (trust_code=True) if you trust this run directory.")
    device = resolve_device(recipe.device)
    splits, info = prepare_data(recipe, preprocess=run_preprocess(run_dir))
    models = build_models(recipe, None, None, device)
    for role in list(models):
        if roles is not None and role not in roles:
            if role != "teacher" or skip_teacher:
                del models[role]
        elif (run_dir / f"{role}.safetensors").is_file():
            load_weights(models[role], run_dir / f"{role}.safetensors", role)
    return recipe, models, splits, info
