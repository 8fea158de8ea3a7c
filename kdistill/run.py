"""A whole run from a recipe: setup -> stages -> final evaluation -> run directory.

This is the Python API; the CLI is a thin layer over :func:`run`. A user's own modules and
data can stand in for the names in the recipe.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kdistill.data import Preprocess, Splits
from kdistill.errors import KDistillError
from kdistill import distributed
from kdistill.checkpoint import (checkpoint_name, has_checkpoint, load_latest, load_module_state, module_state,
                                 save_checkpoint)
from kdistill.embedding_eval import evaluate_embedders, mean_cosine
from kdistill.evaluate import evaluate_model, predict
from kdistill.export import class_names, export_sentence_transformer
from kdistill.models.ensemble import main_teacher
from kdistill.models.hf import HFEncoder
from kdistill.models.weights import load_weights, save_tensors, save_weights, snapshot
from kdistill.objective import Objective
from kdistill.paths import user_path
from kdistill.rebuild import rebuild_run
from kdistill.recipe import Recipe, StageSpec, dump_recipe, load_recipe
from kdistill.report import write_report
from kdistill.rundir import NullRunDir, RunDir, check_run_dir, tensorboard_writer
from kdistill.setup import (build_models, build_stage_objectives, check_stage_data, check_teacher_preprocess, freeze,
                            prepare_data, resolve_device, set_weight_anchors, stage_data)
from kdistill.shallow import EMBEDDING, PROTOTYPES, embedding_metrics, fit_teacher_embedding, init_prototypes
from kdistill.models.taps import OUTPUT, FeatureTaps
from kdistill.train import STOP, StageConfig, teacher_outputs, train_stage


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    models: dict[str, nn.Module] = field(default_factory=dict)  # student, teacher, baseline

    @property
    def student(self) -> nn.Module:
        return self.models["student"]


def _stage_config(stage: StageSpec, seed: int) -> StageConfig:
    return StageConfig(
        epochs=stage.epochs, batch_size=stage.batch_size, optimizer=stage.optimizer.model_dump(),
        schedule=stage.schedule.model_dump(), grad_clip=stage.grad_clip,
        augment=stage.augment.model_dump(), amp=stage.amp, cache_teacher=stage.cache_teacher, seed=seed,
        cache=stage.cache.model_dump() if stage.cache is not None else None,
        channels_last=stage.channels_last, compile=stage.compile,
    )


def fit(recipe: Recipe, models: dict, objectives: dict, splits: Splits, device, out: "RunDir",
        progress: bool = True, pca=None, resume: dict | None = None) -> dict[str, float]:
    """Train the recipe's stages in order; returns the seconds each stage took.

    Writes checkpoints into ``out`` (``recipe.checkpoint``); ``resume``: a checkpoint's state,
    from which training continues exactly.
    """
    eval_set = splits.val_set or splits.test_set
    eval_name = "val" if splits.val_set is not None else "test"
    initial = {role: snapshot(m) for role, m in models.items()}
    ends: dict[str, dict[str, torch.Tensor]] = {}
    starts: dict[str, dict[str, torch.Tensor]] = {}  # the weights each stage started from
    stage_times = {}
    teacher_changed = False  # trained since the teacher's embedding space was fitted
    first = 0
    if resume is not None:
        first, ends, starts = resume["stage"], resume["ends"], resume["starts"]
        stage_times, teacher_changed = resume["stage_times"], resume["teacher_changed"]
        try:
            for role, state in resume["models"].items():
                models[role].load_state_dict(state)
            for name, state in resume["objectives"].items():
                load_module_state(objectives[name], state)
            if pca is not None and resume["pca"] is not None:
                pca.load_state_dict(resume["pca"])
        except (KeyError, RuntimeError) as err:  # a model or loss the checkpoint does not describe
            first = str(err).strip().splitlines()[0][:200]
            raise KDistillError(f"resume: the checkpoint does not fit the models and losses of the run's recipe.yaml "
                                f"({first}); was recipe.yaml edited? Restore it, or start the run again "
                                "(--overwrite).") from None
    teacher_trained = any(s.train == "teacher" for s in recipe.stages)

    def save(i: int, loop: dict | None) -> None:
        if not distributed.is_main() or not recipe.checkpoint.enabled:
            return
        state = {"version": 1, "stage": i, "loop": loop, "ends": ends, "starts": starts,
                 "stage_times": stage_times, "teacher_changed": teacher_changed, "metrics_lines": out.lines,
                 "models": {r: m.state_dict() for r, m in models.items() if r != "teacher" or teacher_trained},
                 "objectives": {n: module_state(o) for n, o in objectives.items()},
                 "pca": pca.state_dict() if pca is not None else None}
        name = checkpoint_name(i, loop["epoch"], loop["step"]) if loop is not None else checkpoint_name(i, 0, 0)
        save_checkpoint(out.path / "checkpoints", name, state, recipe.checkpoint.keep)

    for i, stage in enumerate(recipe.stages):
        if i < first:
            continue
        resuming = resume is not None and i == first
        model, objective = models[stage.train], objectives[stage.name]
        if stage.init_from and not resuming:
            model.load_state_dict(ends[stage.init_from])
        if not resuming:
            starts = {stage.name: snapshot(model)}
        set_weight_anchors(objective, model, initial[stage.train], ends, starts[stage.name])
        teacher_model = None
        if stage.train == "teacher":
            teacher_changed = True
            models["teacher"].requires_grad_(True)
        elif "teacher" in models:
            teacher_model = freeze(models["teacher"])
        if prepare_embedding(recipe, objective, model, models, splits, device, pca, teacher_changed):
            teacher_changed = False
        if resuming:  # after prepare_embedding, which would start the prototypes afresh
            load_module_state(objective, resume["objectives"][stage.name])
        x, y = stage_data(splits, stage.data)

        def on_epoch_end(epoch: int, terms: dict, stage=stage, model=model):
            record = {"stage": stage.name, "model": stage.train, "epoch": epoch + 1, "train": terms}
            line = f"[{stage.name}] epoch {epoch + 1}/{stage.epochs} loss {terms['loss']:.4f}"
            evaluate_now = (epoch + 1) % stage.eval_every == 0 or epoch + 1 == stage.epochs
            if evaluate_now and distributed.is_main():  # other ranks log nothing
                if recipe.task == "embed" and "teacher" in models and stage.train != "teacher":
                    cosine = mean_cosine(predict(model, eval_set.x, device, 256),
                                         predict(main_teacher(models["teacher"]), eval_set.x, device, 256))
                    record[eval_name] = {"mean_cosine": cosine}
                    line += f" {eval_name} cosine to teacher {cosine:.4f}"
                else:
                    metrics = evaluate_model(model, eval_set.x, eval_set.y, device, latency=False)
                    record[eval_name] = {k: v for k, v in metrics.items() if k != "params"}
                    line += f" {eval_name} acc {metrics['accuracy']:.4f}"
                if progress:
                    print(line, flush=True)
            out.log(record)

        result = train_stage(model, objective, x, y, _stage_config(stage, recipe.seed + i), device, teacher_model,
                             on_epoch_end, desc=stage.name, progress=progress,
                             checkpoint=(lambda loop, i=i: save(i, loop)) if recipe.checkpoint.enabled else None,
                             checkpoint_every=recipe.checkpoint.every, resume=resume["loop"] if resuming else None)
        stage_times[stage.name] = result["seconds"]
        ends[stage.name] = snapshot(model)
    if first < len(recipe.stages):
        # every stage trained: a run killed from here on resumes into the final evaluation
        save(len(recipe.stages), None)
    return stage_times


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
    missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else sorted(CHECKPOINT_KEYS)
    if missing:
        raise KDistillError(f"resume: {where} is not a checkpoint kdistill wrote (no {', '.join(missing[:3])}); "
                            "delete it to resume from the one before, or start the run again (--overwrite).")
    return path, state


CHECKPOINT_KEYS = {"version", "stage", "loop", "ends", "starts", "stage_times", "teacher_changed", "metrics_lines",
                   "models", "objectives", "pca"}


@contextlib.contextmanager
def stop_on_signals():
    """While training: SIGINT and SIGTERM ask the loop to write a checkpoint and stop cleanly."""
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: STOP.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP.clear()


def prepare_embedding(recipe: Recipe, objective: Objective, model: nn.Module, models: dict, splits: Splits,
                      device, pca, teacher_changed: bool) -> bool:
    """Before a stage: refit the teacher's PCA if the teacher changed since it was fitted, and
    start the class prototypes at the mean student embedding of each labelled class.

    Returns whether the PCA was refitted.
    """
    spec = recipe.embedding
    if spec is None:
        return False
    s_names, t_names = objective.taps()
    refit = EMBEDDING in t_names and teacher_changed
    if refit:
        fitted = fit_teacher_embedding(models["teacher"], spec.teacher, splits.pool_set.x, spec.dim,
                                       device, spec.max_samples, recipe.seed)
        pca.load_state_dict(fitted.state_dict())
    if PROTOTYPES in s_names:
        embedder, head = objective.heads[PROTOTYPES]
        init_prototypes(head, model, spec.student, embedder, splits.labelled_set.x, splits.labelled_set.y, device)
    return refit


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
        resume: an unfinished run directory (``runs/<name>.incomplete``, or ``runs/<name>``):
            continue from its newest readable checkpoint, with the recipe it was started with.
    Returns:
        RunResult with the run directory, the summary dict and the trained models.
    """
    created = distributed.init_from_env()  # launched by torchrun: join the process group
    try:
        return _run(recipe, overrides, teacher, student, data, runs_dir, overwrite, progress, resume)
    finally:
        if created:
            torch.distributed.destroy_process_group()


def _run(recipe, overrides, teacher, student, data, runs_dir, overwrite, progress, resume) -> RunResult:
    # modules passed from Python stand in for the recipe's teacher / student (a recipe may leave
    # them out); the resolved recipe records where they came from
    given = [f"{role}.model=(python) {type(m).__name__}" for role, m in (("teacher", teacher), ("student", student))
             if m is not None]
    checkpoint = None
    if resume is not None:
        resume_dir, checkpoint = find_resume_point(resume, overrides)
        recipe, runs_dir, given = resume_dir / "recipe.yaml", resume_dir.parent, []
    recipe = load_recipe(recipe, [*given, *overrides])
    device = resolve_device(recipe.device)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    if checkpoint is None:
        check_run_dir(runs_dir, recipe.name, overwrite)  # before any work: a refusal costs nothing
    if recipe.tensorboard:
        tensorboard_writer()
    started = time.perf_counter()
    splits, data_info = prepare_data(recipe, data)
    check_stage_data(recipe, splits)
    models = build_models(recipe, teacher, student, device)
    check_teacher_preprocess(recipe, models, splits, data_info, device)  # its accuracy before / after preprocessing
    if "teacher" in models and not any(s.train == "teacher" for s in recipe.stages):
        freeze(models["teacher"])
    pca = None
    if recipe.embedding is not None:
        pca = fit_teacher_embedding(models["teacher"], recipe.embedding.teacher, splits.pool_set.x,
                                    recipe.embedding.dim, device, recipe.embedding.max_samples, recipe.seed)
    num_classes = int(splits.test_set.y.max()) + 1
    objectives, prototype_head = build_stage_objectives(recipe, models, splits.test_set.x[:2].to(device), pca,
                                                  num_classes)

    if not distributed.is_main():  # other ranks train their share and write nothing
        out = NullRunDir()
    elif checkpoint is not None:
        out = RunDir.reopen(resume_dir, checkpoint["metrics_lines"])
    else:
        out = RunDir(runs_dir, recipe.name, overwrite)
        (out.path / "recipe.yaml").write_text(dump_recipe(recipe))
    if recipe.tensorboard and distributed.is_main():
        out.tensorboard()
    try:
        with stop_on_signals():
            stage_times = fit(recipe, models, objectives, splits, device, out, progress, pca, checkpoint)
    except KDistillError as err:
        raise _kept_or_discarded(out, err) from None
    if not distributed.is_main():
        distributed.barrier()  # until rank 0 has evaluated and written the run
        return RunResult(run_dir=out.final_for(runs_dir, recipe.name), summary={}, models=models)
    # from here on the run's checkpoints stay until it is complete: a kill during the evaluation,
    # the report or the rename is finished by --resume without training again
    try:
        summary = _finish(recipe, models, splits, device, out, pca, prototype_head, data_info, stage_times, started)
    except KDistillError as err:
        raise _kept_or_discarded(out, err) from None
    run_dir = out.complete()
    distributed.barrier()
    return RunResult(run_dir=run_dir, summary=summary, models=models)


def _finish(recipe: Recipe, models: dict, splits: Splits, device, out: RunDir, pca, prototype_head, data_info: dict,
            stage_times: dict, started: float) -> dict:
    """After training: the final evaluation, the weights, the student's export and the report,
    all written into the unfinished run directory. Returns the summary."""
    logits: dict[str, torch.Tensor] = {}
    summary = final_evaluation(recipe, models, splits, device, logits)
    if logits:  # for the report's calibration and disagreement figures
        save_tensors({**logits, "labels": splits.test_set.y}, out.path / "predictions.safetensors")
        summary["classes"] = class_names(recipe, logits[next(iter(logits))].shape[1])
    if recipe.embedding is not None:
        spec = recipe.embedding
        summary["embedding"] = embedding_metrics(
            models["student"], spec.student, prototype_head, models["teacher"], spec.teacher, pca,
            splits.labelled_set, splits.test_set, device, tuple(spec.shots), recipe.seed)
        save_weights(prototype_head, out.path / "embedding_head.safetensors")
    summary.update({"name": recipe.name, "device": str(device), "data": {
        **data_info, "labelled": len(splits.labelled_set), "transfer": len(splits.transfer_set),
        "val": len(splits.val_set) if splits.val_set is not None else 0, "test": len(splits.test_set)},
        "stage_seconds": stage_times, "total_seconds": time.perf_counter() - started})
    preprocess = Preprocess.from_info(data_info)  # what every model's inputs are, from raw inputs
    metadata = {"recipe": recipe.name, **(preprocess.to_metadata() if preprocess is not None else {})}
    for role in ("student", "teacher", "baseline"):
        if any(s.train == role for s in recipe.stages):
            save_weights(models[role], out.path / f"{role}.safetensors", metadata)
    student_model = models.get("student")
    if isinstance(student_model, HFEncoder) and not getattr(student_model, "pruned_heads", None):
        # a folder transformers.AutoModel and sentence_transformers.SentenceTransformer load as it is
        export_sentence_transformer(student_model, out.path / "student_hf", overwrite=True)  # a resumed run's too
    (out.path / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(out.path, summary)
    return summary


def _kept_or_discarded(out, err: KDistillError) -> KDistillError:
    """A run stopped after it started training keeps its directory when it has a checkpoint to
    resume from (and the message says how); otherwise nothing of it is left on disk."""
    if out.path is None:  # a rank that writes nothing
        return err
    if has_checkpoint(out.path / "checkpoints"):
        return type(err)(f"{err}; the run so far is kept: continue with kdistill run --resume {out.path}")
    out.discard()
    return type(err)(f"{err}; no checkpoint had been written, so {out.path} was removed")


def cache_recipe(recipe: Recipe | dict | str | Path, overrides: list[str] = (), verify: bool = False,
                 progress: bool = True) -> list[dict]:
    """Build (or find) the disk caches of teacher outputs that the recipe's stages ask for
    (``cache:``), as ``run`` would, without training; with ``verify``, compare each with the
    live teacher on a sample. Returns one dict a cache: stage, folder, size, differences."""
    from kdistill.cache import build_cache, verify_cache

    recipe = load_recipe(recipe, list(overrides))
    if any(s.train == "teacher" for s in recipe.stages):
        raise KDistillError("cache: the recipe trains its teacher, so its outputs are known only during the run; "
                            "train the teacher in its own recipe and load its weights.")
    stages = [s for s in recipe.stages if s.cache is not None]
    if not stages:
        raise KDistillError("cache: no stage of the recipe has a 'cache' section; add e.g. "
                            "stages.<name>.cache={dir: .kdistill/cache} to the stages that should use one.")
    device = resolve_device(recipe.device)
    splits, _ = prepare_data(recipe)
    models = build_models(recipe, None, None, device)
    teacher = freeze(models["teacher"])
    pca = None
    if recipe.embedding is not None:
        pca = fit_teacher_embedding(teacher, recipe.embedding.teacher, splits.pool_set.x, recipe.embedding.dim,
                                    device, recipe.embedding.max_samples, recipe.seed)
    objectives, _ = build_stage_objectives(recipe, models, splits.test_set.x[:2].to(device), pca,
                                           int(splits.test_set.y.max()) + 1)
    done = []
    for i, stage in enumerate(recipe.stages):
        if stage.cache is None or not objectives[stage.name].uses_teacher:
            continue
        x, _ = stage_data(splits, stage.data)
        config = _stage_config(stage, recipe.seed + i)
        names = objectives[stage.name].taps()[1]
        with FeatureTaps(teacher, names, "teacher", objectives[stage.name].teacher_derived) as taps:
            sources = taps.sources
        augment = config.augment if (config.augment.get("shift") or config.augment.get("flip")) else None
        cache = build_cache(teacher, sources, x, stage.cache.dir, device, augment, stage.cache.views, config.seed,
                            stage.cache.topk, stage.cache.dtype, progress=progress)
        entry = {"stage": stage.name, "folder": str(cache.folder), "samples": cache.n, "views": cache.views,
                 "taps": cache.names, "bytes": cache.meta["bytes"]}
        if verify:
            entry["max_abs_diff"] = verify_cache(cache, teacher, x, device, seed=recipe.seed)
        done.append(entry)
    return done


def final_evaluation(recipe: Recipe, models: dict, splits: Splits, device, outputs: dict | None = None) -> dict:
    """Metrics of every model on the test set; the student's and baseline's against the teacher.
    ``outputs``: filled with each classifier's test logits."""
    test = splits.test_set
    trained = {s.train for s in recipe.stages}
    if recipe.task == "embed":
        judged = {role: main_teacher(models["teacher"]) if role == "teacher" else m for role, m in models.items()
                  if role != "student" or role in trained}
        return {"test": evaluate_embedders(judged, splits.pool_set.x, splits.pool_labels, test.x, test.y, device,
                                           tuple(recipe.embedding.shots) if recipe.embedding else (1, 5, 10, 50),
                                           recipe.seed)}
    teacher_logits = None
    if "teacher" in models:
        teacher = main_teacher(models["teacher"])
        teacher.eval()
        teacher_logits = teacher_outputs(teacher, [OUTPUT], test.x, device)[OUTPUT].cpu()
    results = {}
    for role in ("teacher", "baseline", "student"):
        # a student no stage trained is not reported (a run that only trains a teacher)
        if role in models and (role != "student" or role in trained):
            against = teacher_logits if role != "teacher" else None
            model = main_teacher(models[role]) if role == "teacher" else models[role]
            logits = teacher_logits if role == "teacher" else predict(model, test.x, device)
            results[role] = evaluate_model(model, test.x, test.y, device, against, recipe.latency, logits)
            if outputs is not None:
                outputs[role] = logits
    if "teacher" in results and "student" in results:
        results["student"]["params_ratio"] = results["teacher"]["params"] / results["student"]["params"]
    return {"test": results}


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
    recipe, models, splits, _ = rebuild_run(run_dir, overrides, trust_code=trust_code)
    device = resolve_device(recipe.device)
    if weights is not None:
        if "student" not in models:
            raise KDistillError(f"eval --weights: the run in {run_dir} has no student (its stages train "
                                f"{', '.join(sorted({s.train for s in recipe.stages}))}); drop --weights.")
        load_weights(models["student"], weights, "student")
    return final_evaluation(recipe, models, splits, device)
