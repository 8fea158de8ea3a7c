"""A recipe's stages trained in order, with checkpoints to resume from after a crash."""

from __future__ import annotations

import threading

import torch
import yaml
from torch import nn

from kdistill import distributed, progress
from kdistill.errors import KDistillError
from kdistill.models.infer import freeze
from kdistill.models.weights import snapshot
from kdistill.objective.features import StageContext
from kdistill.recipe.load import dump_recipe
from kdistill.train.checkpoint import checkpoint_name, save_checkpoint
from kdistill.train.loop import Hooks, train_stage
from kdistill.train.state import Modules, RunState


def _flat(tree, prefix: str = "") -> dict[str, object]:
    """A recipe tree as ``{dotted.path: value}`` (list items by index: ``stages.0.epochs``)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None or not tree:
        return {prefix: tree}
    out = {}
    for key, value in items:
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _shown(value, absent: bool = False) -> str:
    text = "(absent)" if absent else yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    text = text.removesuffix("\n...").removesuffix(" ...").strip()
    return text if len(text) <= 24 else text[:21] + "..."


def check_same_recipe(recipe, state: dict, recipe_file) -> None:
    """Refuse to resume when the run's recipe, as read now from ``recipe_file`` (and normalised
    as the run reads it), differs from the one the checkpoint ``state`` recorded when it was
    written: the run would finish as another recipe than the one it trained with. A checkpoint
    written before checkpoints recorded the recipe resumes as before."""
    recorded = state.get("recipe")
    if not isinstance(recorded, str):
        return
    before, now = _flat(yaml.safe_load(recorded)), _flat(yaml.safe_load(dump_recipe(recipe)))
    missing = object()
    changed = [k for k in [*before, *(k for k in now if k not in before)]
               if before.get(k, missing) != now.get(k, missing)]
    if not changed:
        return
    words = [f"{k} {_shown(before.get(k), k not in before)} -> {_shown(now.get(k), k not in now)}"
             for k in changed[:3]]
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    raise KDistillError(f"resume: {recipe_file} was edited since the run started ({', '.join(words)}{more}); "
                        "restore it, or start the run again (--overwrite).")


class Fit:
    """Training state across stages: the stage reached, the weights each stage started from and
    ended with, the time each took, and whether the teacher changed since the feature providers
    were fitted. Registers itself (``fit``), the models, objectives and feature providers in the
    run's ``RunState``, which checkpoints save (``resume``: the checkpoint continued from)."""

    def __init__(self, pipeline, out, resume: dict | None = None):
        self.p, self.out = pipeline, out
        self.initial = {role: snapshot(m) for role, m in pipeline.models.items()}
        self.stage = 0  # the stage being trained (all of them: done)
        self.ends: dict[str, dict[str, torch.Tensor]] = {}
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        self.stage_times: dict[str, float] = {}
        # a keep_best stage's best epoch so far: stage name -> (epoch, score, weights)
        self.best: dict[str, tuple[int, float, dict[str, torch.Tensor]]] = {}
        self.teacher_changed = False
        self.run_state = RunState(resume["state"] if resume is not None else None)
        saved = {role: m for role, m in pipeline.models.items()
                 if role != "teacher" or pipeline.recipe.trains("teacher")}  # a frozen teacher is never saved
        parts = {"fit": self, "models": Modules(saved, strict=True), "objectives": Modules(pipeline.objectives),
                 "features": Modules(list(pipeline.providers))}
        try:
            for name, part in parts.items():
                self.run_state.register(name, part)
        except (KeyError, RuntimeError, ValueError) as err:  # a model or loss the checkpoint does not describe
            first = str(err).strip().splitlines()[0][:200]
            raise KDistillError(f"resume: the checkpoint does not fit the models and losses of the run's recipe.yaml "
                                f"({first}); was recipe.yaml edited? Restore it, or start the run again "
                                "(--overwrite).") from None
        self.first = self.stage  # the stage to start from: the one the checkpoint stopped in (or 0)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "ends": self.ends, "starts": self.starts, "stage_times": self.stage_times,
                "teacher_changed": self.teacher_changed, "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.ends, self.starts = state["stage"], state["ends"], state["starts"]
        self.stage_times, self.teacher_changed = state["stage_times"], state["teacher_changed"]
        self.best = state["best"]

    def save(self) -> None:
        """A checkpoint of every registered object: at the loop's position in stage ``stage``
        while it trains, else before it starts."""
        recipe = self.p.recipe
        if not distributed.is_main() or not recipe.checkpoint.enabled:
            return
        state = self.run_state.checkpoint(recipe=dump_recipe(recipe), metrics_lines=self.out.lines)
        loop = state["state"].get("loop")
        name = checkpoint_name(self.stage, *((loop["epoch"], loop["step"]) if loop is not None else (0, 0)))
        save_checkpoint(self.out.path / "checkpoints", name, state, recipe.checkpoint.keep)

    def judge_epoch(self, stage, epoch: int, model: nn.Module, score: float | None) -> None:
        """After an evaluated epoch of a ``keep_best`` stage: its weights kept if ``score`` (the
        family's, on the validation set; given on rank 0, which alone evaluates) is the best yet."""
        score = distributed.from_main(score, self.p.device)
        if stage.name not in self.best or score > self.best[stage.name][1]:
            self.best[stage.name] = (epoch, score, snapshot(model))

    def keep_best(self, stage, model: nn.Module) -> str:
        """At the end of a ``keep_best`` stage: the model set to its best epoch's weights; what was
        kept, in words."""
        epoch, score, weights = self.best.pop(stage.name)
        model.load_state_dict(weights)
        self.out.log({"stage": stage.name, "model": stage.train, "kept_epoch": epoch, "score": score})
        return f"[{stage.name}] kept epoch {epoch} of {stage.epochs} (the best on the validation set)"

    def prepare(self, stage, resuming: bool) -> nn.Module | None:
        """Before ``stage``: its starting weights, the teacher frozen or trainable, the objective
        prepared (``resuming``: the stage resumes from the checkpoint). Returns the frozen teacher
        the stage learns from (or None)."""
        models, objective = self.p.models, self.p.objectives[stage.name]
        model = models[stage.train]
        if stage.init_from and not resuming:
            model.load_state_dict(self.ends[stage.init_from])
        if not resuming:
            self.starts = {stage.name: snapshot(model)}
        teacher = None
        if stage.train == "teacher":
            self.teacher_changed = True
            models["teacher"].requires_grad_(True)
        elif "teacher" in models:
            teacher = freeze(models["teacher"])
        context = StageContext(model, models, self.p.splits, self.p.device, self.initial[stage.train], self.ends,
                               self.starts[stage.name], self.teacher_changed, self.p.recipe.seed)
        if objective.prepare(context):
            self.teacher_changed = False
        if resuming:  # after prepare, which would start the providers' state afresh
            self.run_state.reload("objectives")
        return teacher


def fit(pipeline, out, resume: dict | None = None, stop: threading.Event | None = None) -> dict[str, float]:
    """Train the recipe's stages in order; returns the seconds each stage took.

    Writes checkpoints into ``out`` (``recipe.checkpoint``); ``resume``: a checkpoint's state,
    from which training continues exactly; ``stop``: set to checkpoint and stop cleanly. Epoch
    lines and bars where the job shows progress (``kdistill.progress``).
    """
    recipe, splits = pipeline.recipe, pipeline.splits
    if splits.val_set is None and any(stage.keep_best for stage in recipe.stages):  # user Splits without one
        raise KDistillError("keep_best: epochs are chosen on a validation set, and the data given has none; "
                            "give Splits with a val_set, or set data.val")
    eval_set = splits.val_set or splits.test_set
    eval_name = "val" if splits.val_set is not None else "test"
    state = Fit(pipeline, out, resume)
    for i, stage in enumerate(recipe.stages):
        if i < state.first:
            continue
        state.stage = i
        teacher = state.prepare(stage, resume is not None and i == state.first)
        model = pipeline.models[stage.train]

        def on_epoch_end(epoch: int, terms: dict, stage=stage, model=model, teacher=teacher):
            record = {"stage": stage.name, "model": stage.train, "epoch": epoch + 1, "train": terms}
            line = f"[{stage.name}] epoch {epoch + 1}/{stage.epochs} loss {terms['loss']:.4f}"
            evaluate_now = (epoch + 1) % stage.eval_every == 0 or epoch + 1 == stage.epochs
            if evaluate_now and distributed.is_main():  # other ranks log nothing
                record[eval_name], words = pipeline.family.epoch_metrics(model, teacher, eval_set, pipeline.device)
                line += f" {eval_name} {words}"
                if progress.enabled():
                    print(line, flush=True)
            if evaluate_now and stage.keep_best:  # the recipe guarantees a validation set
                score = pipeline.family.selection_score(record[eval_name]) if eval_name in record else None
                state.judge_epoch(stage, epoch + 1, model, score)
            out.log(record)

        hooks = Hooks(on_epoch_end=on_epoch_end, desc=stage.name,
                      checkpoint=state.save if recipe.checkpoint.enabled else None,
                      checkpoint_every=recipe.checkpoint.every, stop=stop or threading.Event(), state=state.run_state)
        x, y = pipeline.stage_data(stage)
        result = train_stage(model, pipeline.objectives[stage.name], x, y, stage, pipeline.device, teacher,
                             seed=recipe.seed + i, memo=pipeline.memo, hooks=hooks, loader=recipe.data.loader)
        state.stage_times[stage.name] = result["seconds"]
        if stage.keep_best:
            kept = state.keep_best(stage, model)
            if progress.enabled():
                print(kept, flush=True)
        state.ends[stage.name] = snapshot(model)
    if state.first < len(recipe.stages):
        # every stage trained: a run killed from here on resumes into the final evaluation
        state.stage = len(recipe.stages)
        state.save()
    return state.stage_times
