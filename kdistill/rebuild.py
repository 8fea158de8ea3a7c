"""Jobs on a finished run, rebuilt from its directory through the builder (the recipe it ran,
its models with the weights it saved, its data): ``kdistill eval`` and ``kdistill export``."""

from __future__ import annotations

import json
from pathlib import Path

from kdistill.data import Preprocess
from kdistill.data.load import class_names
from kdistill.data.preprocess import input_steps
from kdistill.export.student import EXTENSIONS, FORMATS, write_student
from kdistill.errors import KDistillError, shown
from kdistill.models.weights import load_weights
from kdistill.paths import no_links, user_path
from kdistill.recipe import load_recipe
from kdistill.rundir import check_written
from kdistill.pipeline import Pipeline, build_pipeline


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
                trust_code: bool = False) -> Pipeline:
    """A finished run's pipeline: its recipe, models (with their saved weights), data splits and
    data info, built for evaluation (no objectives).

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
            raise KDistillError(f"{run_dir}: its recipe builds the {role} with {shown(spec.model)}, which would import and "
                                "run that code; pass --trust-code (trust_code=True) if you trust this run directory.")
    pipeline = build_pipeline(recipe, preprocess=run_preprocess(run_dir), train=False)
    models = pipeline.models
    for role in list(models):
        if roles is not None and role not in roles:
            if role != "teacher" or skip_teacher:
                del models[role]
        elif (run_dir / f"{role}.safetensors").is_file():
            load_weights(models[role], run_dir / f"{role}.safetensors", role)
    return pipeline


def evaluate_run(run_dir: str | Path, weights: str | Path | None = None, latency: bool = True,
                 data: str | Path | None = None, trust_code: bool = False) -> dict:
    """Re-evaluate a finished run: rebuild its models from ``recipe.yaml`` and its safetensors files.

    Args:
        weights: a student .safetensors to evaluate instead of the run's own.
        data: other data of the same kind (an IDX folder, a text or CSV file) to evaluate on,
            preprocessed as the run's own data was (its summary.json records how).
        trust_code: allow the run's recipe to import the model callables it names.
    Returns:
        {"test": {role: metrics}} as in ``summary.json``.
    """
    overrides = [f"latency={str(latency).lower()}"]
    if data is not None:
        if not Path(data).exists():
            raise KDistillError(f"eval --data: {data} not found; give a folder of IDX files or a text/CSV file.")
        overrides.append(f"data.path={data}")
    # the run's own preprocessing is applied to the other data too (rebuild_run reads it)
    p = rebuild_run(run_dir, overrides, trust_code=trust_code)
    if weights is not None:
        if "student" not in p.models:
            raise KDistillError(f"eval --weights: the run in {run_dir} has no student (its stages train "
                                f"{', '.join(sorted({s.train for s in p.recipe.stages}))}); drop --weights.")
        load_weights(p.models["student"], weights, "student")
    return p.family.final_metrics(p.recipe, p.models, p.splits, p.device)


def export_run(run_dir: str | Path, fmt: str = "safetensors", out: str | Path | None = None,
               overwrite: bool = False, trust_code: bool = False) -> dict:
    """Export a finished run's student alone (no teacher, adapters or loss state) as
    ``student.<ext>`` in ``out`` (default ``<run_dir>/export``), with ``student.json``: the raw
    input (dtype, shape), every preprocessing step that turns it into the input the student
    takes (shape, dtype), its class names and the format. ONNX and TorchScript files are checked
    against PyTorch on real test inputs. ``trust_code``: allow the run's recipe to import the
    model callables it names (``package.module:callable``).

    Returns: the JSON written, with ``path``.
    """
    if fmt not in FORMATS:
        raise KDistillError(f"export: unknown format {shown(fmt)}; use one of {', '.join(FORMATS)}.")
    run_dir = user_path(run_dir, "export")
    out = user_path(out, "export --out") if out is not None else no_links(run_dir / "export", run_dir)
    target = out / f"student.{EXTENSIONS[fmt]}"
    if out.exists() and not out.is_dir():
        raise KDistillError(f"export: {out} is a file; give a folder with --out.")
    for path in (target, out / "student.json"):  # every file the export writes, before any is written
        if path.is_dir() and not path.is_symlink():
            raise KDistillError(f"export: {path} is a folder where the export writes a file; move it away.")
        if no_links(path).exists() and not overwrite:
            raise KDistillError(f"export: {path} exists; choose another --out or pass --overwrite.")
    p = rebuild_run(run_dir, roles=("student",), trust_code=trust_code)
    if out == run_dir / "export":  # into the run directory: only one kdistill wrote
        check_written(run_dir, "export")
    recipe, models, splits, info = p.recipe, p.models, p.splits, p.data_info
    if "student" not in models:
        raise KDistillError(f"export: the run in {run_dir} trained no student (its stages train "
                            f"{', '.join(sorted({s.train for s in recipe.stages}))}); export a run with a student.")
    student = models["student"].cpu().eval()
    sample = splits.test_set.x[:64]
    preprocess = Preprocess.from_info(info)
    input_shape = [None, *sample.shape[1:]]
    outputs = max(s.num_classes for s in (splits.pool_set, splits.test_set) if s is not None)  # as the models were built
    meta = {"format": fmt, "recipe": recipe.name, **input_steps(recipe, preprocess, input_shape),
            "input_shape": input_shape, "input_dtype": str(sample.dtype).removeprefix("torch."),
            "classes": class_names(recipe, outputs, splits.test_set.source) if p.family.outputs_classes else None,
            "task": recipe.task}
    return write_student(student, sample, meta, fmt, out, target, preprocess)
