"""A whole run from a recipe: build -> fit the stages -> final evaluation -> run directory.

This is the Python API; the CLI is a thin layer over :func:`run`. A user's own modules and
data can stand in for the names in the recipe.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kdistill import distributed
from kdistill.data import Preprocess
from kdistill.errors import KDistillError
from kdistill.evaluate.report import write_report
from kdistill.data.load import class_names, known_class_names
from kdistill.data.weights_meta import classes_metadata
from kdistill.models.weights import save_tensors, save_weights
from kdistill.objective.features import StageContext
from kdistill.paths import user_path
from kdistill.progress import shown
from kdistill.pipeline import Pipeline, build_pipeline
from kdistill.recipe import Recipe, dump_recipe, load_recipe, read_recipe_file
from kdistill.rundir import NullRunDir, RunDir, check_free, check_run_dir, tensorboard_writer, unwritable
from kdistill.train.checkpoint import has_checkpoint, load_latest
from kdistill.train.fit import check_same_recipe, fit
from kdistill.train.signals import stop_on_signals
from kdistill.train.state import readable


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    models: dict[str, nn.Module] = field(default_factory=dict)  # student, teacher, baseline

    @property
    def student(self) -> nn.Module:
        return self.models["student"]


def find_resume_point(resume: str | Path, overrides) -> tuple[Path, dict]:
    """The unfinished run directory ``resume`` names and its newest readable checkpoint."""
    path = user_path(resume, "resume")
    if not path.name.endswith(".incomplete") and not path.exists():
        path = path.with_name(path.name + ".incomplete")
    if overrides:
        raise KDistillError("resume: a resumed run keeps the recipe it started with; drop the key=value overrides.")
    if not (path / "recipe.yaml").is_file():
        raise KDistillError(f"resume: {resume} is not an unfinished run directory (no recipe.yaml in {path}).")
    found = load_latest(path / "checkpoints")
    if found is None:
        raise KDistillError(f"resume: {path} holds no readable checkpoint; start the run again (--overwrite).")
    state, where = found
    return path, readable(state, where)


def run(
    recipe: Recipe | dict | str | Path,
    overrides: list[str] = (),
    *,
    teacher: nn.Module | None = None,
    student: nn.Module | None = None,
    data=None,
    runs_dir: str | Path = "runs",
    overwrite: bool = False,
    progress: bool = True,
    resume: str | Path | None = None,
) -> RunResult:
    """Run a recipe end to end and write ``runs/<name>/``.

    Args:
        recipe: a Recipe, a dict or a YAML path; ``overrides`` are ``key.sub=value`` strings.
        teacher, student: the user's own modules, used in place of the recipe's model names.
        data: the user's own ``(train, test)`` data (see ``kdistill.data.as_source``) or Splits.
        overwrite: replace an existing run directory of the same name.
        progress: show bars and epoch lines (``kdistill.progress``) while the run lasts.
        resume: an unfinished run directory (``runs/<name>.incomplete``, or ``runs/<name>``):
            continue from its newest readable checkpoint, with the recipe it was started with.
    Returns:
        RunResult with the run directory, the summary dict and the trained models.
    """
    created = distributed.init_from_env()  # launched by torchrun: join the process group
    try:
        with shown(progress):
            return _run(recipe, overrides, teacher, student, data, runs_dir, overwrite, resume)
    finally:
        if created:
            torch.distributed.destroy_process_group()


def _started_as(recipe_path: Path) -> list[str]:
    """Overrides that keep the meaning a run's recipe.yaml had when the run started: one written
    before weight decay left out biases and normalisation weights decayed them too."""
    try:
        tree = read_recipe_file(recipe_path)  # within the limits on a recipe's size
    except (OSError, KDistillError):
        return []  # load_recipe says what is wrong with it
    stages = tree.get("stages") if isinstance(tree, dict) else None
    return [f"stages.{i}.optimizer.decay_bias_and_norm=true" for i, stage in enumerate(stages or [])
            if isinstance(stage, dict) and isinstance(stage.get("optimizer"), dict)
            and "decay_bias_and_norm" not in stage["optimizer"]]


def _run(recipe, overrides, teacher, student, data, runs_dir, overwrite, resume) -> RunResult:
    # modules passed from Python stand in for the recipe's teacher / student (a recipe may leave
    # them out); the resolved recipe records where they came from
    given = [f"{role}.model=(python) {type(m).__name__}" for role, m in (("teacher", teacher), ("student", student))
             if m is not None]
    checkpoint = None
    if resume is not None:
        resume_dir, checkpoint = find_resume_point(resume, overrides)
        check_free(resume_dir)  # before any work: another process may be running it
        recipe, runs_dir = resume_dir / "recipe.yaml", resume_dir.parent
        given = _started_as(recipe)
    recipe = load_recipe(recipe, [*given, *overrides])
    if checkpoint is not None:
        check_same_recipe(recipe, checkpoint, resume_dir / "recipe.yaml")  # as the checkpoint recorded it
    if checkpoint is None:
        check_run_dir(runs_dir, recipe.name, overwrite)  # before any work: a refusal costs nothing
    if recipe.tensorboard:
        tensorboard_writer()
    started = time.perf_counter()
    pipeline = build_pipeline(recipe, teacher, student, data)

    if not distributed.is_main():  # other ranks train their share and write nothing
        out = NullRunDir()
    elif checkpoint is not None:
        out = RunDir.reopen(resume_dir, checkpoint["metrics_lines"], overwrite)
    else:
        out = RunDir(runs_dir, recipe.name, overwrite)
    try:  # the run holds the lock on its name until it ends, however it ends
        return _train_and_write(pipeline, out, recipe, checkpoint, runs_dir, started)
    finally:
        out.release()


def _train_and_write(pipeline, out, recipe, checkpoint, runs_dir, started) -> RunResult:
    try:
        if checkpoint is None and distributed.is_main():
            out.write("recipe.yaml", dump_recipe(recipe))
            if pipeline.data_info.get("_skipped"):  # data.images.skip_unreadable: the files left out, and why
                out.write("skipped_files.txt",
                          "".join(f"{name}\t{why}\n" for name, why in pipeline.data_info["_skipped"]))
        if recipe.tensorboard and distributed.is_main():
            out.tensorboard()
        with stop_on_signals() as stop:
            stage_times = fit(pipeline, out, checkpoint, stop)
    except (KDistillError, OSError) as err:  # OSError: a disk full or read-only (others are re-raised)
        raise _kept_or_discarded(out, err) from None
    if not distributed.is_main():
        distributed.barrier()  # until rank 0 has evaluated and written the run
        return RunResult(run_dir=out.final_for(runs_dir, recipe.name), summary={}, models=pipeline.models)
    # from here on the run's checkpoints stay until it is complete: a kill during the evaluation,
    # the report or the rename is finished by --resume without training again
    try:
        summary = _finish(pipeline, out, stage_times, started)
    except (KDistillError, OSError) as err:
        raise _kept_or_discarded(out, err) from None
    run_dir = out.complete()  # refused, the finished run kept, if <name> appeared meanwhile
    distributed.barrier()
    return RunResult(run_dir=run_dir, summary=summary, models=pipeline.models)


def _finish(pipeline: Pipeline, out: RunDir, stage_times: dict, started: float) -> dict:
    """After training: the final evaluation (with a bar for each long pass), the
    weights, the student's export and the report, all written into the unfinished run directory.
    Returns the summary."""
    recipe, models, splits, device = pipeline.recipe, pipeline.models, pipeline.splits, pipeline.device
    logits: dict[str, torch.Tensor] = {}
    summary = pipeline.family.final_metrics(recipe, models, splits, device, logits)
    if logits:  # for the report's calibration and disagreement figures
        save_tensors({**logits, "labels": splits.test_set.y}, out.path / "predictions.safetensors")
        summary["classes"] = class_names(recipe, logits[next(iter(logits))].shape[1], splits.test_set.source)
    context = StageContext(models.get("student"), models, splits, device, seed=recipe.seed)
    for provider in pipeline.providers:
        summary.update(provider.summary(context))
        for stem, module in provider.files().items():
            save_weights(module, out.path / f"{stem}.safetensors")
    summary.update({"name": recipe.name, "device": str(device), "data": {
        **{k: v for k, v in pipeline.data_info.items() if not k.startswith("_")},  # "_": not for the summary
        "labelled": len(splits.labelled_set), "transfer": len(splits.transfer_set),
        "val": len(splits.val_set) if splits.val_set is not None else 0, "test": len(splits.test_set)},
        "stage_seconds": stage_times, "total_seconds": time.perf_counter() - started})
    kept = getattr(models.get("student"), "kept_layers", None)  # a sub-network: which teacher layers it kept
    if kept is not None:
        summary["student_kept_layers"] = list(kept)
    preprocess = Preprocess.from_info(pipeline.data_info)  # what every model's inputs are, from raw inputs
    names = known_class_names(recipe, splits.test_set.source) if "classes" in summary else None  # name the outputs
    metadata = {"recipe": recipe.name, **(preprocess.to_metadata() if preprocess is not None else {}),
                **classes_metadata(names if names is not None and names == summary.get("classes") else None)}
    for role in ("student", "teacher", "baseline"):
        if recipe.trains(role):
            accuracy = summary.get("test", {}).get(role, {}).get("accuracy") if role == "teacher" else None
            save_weights(models[role], out.path / f"{role}.safetensors",  # the teacher's accuracy: later runs check it
                         {**metadata, **({"test_accuracy": repr(float(accuracy))} if accuracy is not None else {})})
    if "student" in models:
        pipeline.family.export(models["student"], out.path)
    out.write("summary.json", json.dumps(summary, indent=2))
    write_report(out.path, summary)
    return summary


def _kept_or_discarded(out, err: KDistillError | OSError) -> KDistillError:
    """A run stopped after it started training keeps its directory when it has a checkpoint to
    resume from (and the message says how); otherwise nothing of it is left on disk. An
    OSError of a disk full or read-only becomes a one-line error; any other is re-raised."""
    if isinstance(err, OSError):
        if unwritable(err) is None:
            raise err
        err = unwritable(err)
    if out.path is None:  # a rank that writes nothing
        return err
    if has_checkpoint(out.path / "checkpoints"):
        return type(err)(f"{err}; the run so far is kept: continue with kdistill run --resume {out.path}")
    out.discard()
    return type(err)(f"{err}; no checkpoint had been written, so {out.path} was removed")


