"""A recipe's stages trained in order, with checkpoints to resume from after a crash."""

from __future__ import annotations

import threading

import torch
import yaml
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.infer import freeze
from kdistill.models.weights import snapshot
from kdistill.objective.features import StageContext
from kdistill.recipe.load import dump_recipe
from kdistill.train import distributed
from kdistill.train.checkpoint import checkpoint_name, load_module_state, module_state, save_checkpoint
from kdistill.train.loop import Hooks, train_stage

# what a checkpoint written by ``fit`` holds (resume refuses a file without all of them); also,
# since they were added, "best" (keep_best) and "recipe" (the run's resolved recipe, YAML text)
CHECKPOINT_VERSION = 2  # 2: feature providers' state under "features" (1: the PCA under "pca")
CHECKPOINT_KEYS = {"version", "stage", "loop", "ends", "starts", "stage_times", "teacher_changed", "metrics_lines",
                   "models", "objectives", "features"}


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
    """Training state across stages: the weights each stage started from and ended with, the
    time each took, and whether the teacher changed since the feature providers were fitted."""

    def __init__(self, pipeline, out, resume: dict | None = None):
        self.p, self.out = pipeline, out
        self.initial = {role: snapshot(m) for role, m in pipeline.models.items()}
        self.ends: dict[str, dict[str, torch.Tensor]] = {}
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        self.stage_times: dict[str, float] = {}
        # a keep_best stage's best epoch so far: stage name -> (epoch, score, weights)
        self.best: dict[str, tuple[int, float, dict[str, torch.Tensor]]] = {}
        self.teacher_changed = False
        self.first = 0
        if resume is not None:
            self._restore(resume)

    def _restore(self, state: dict) -> None:
        self.first, self.ends, self.starts = state["stage"], state["ends"], state["starts"]
        self.stage_times, self.teacher_changed = state["stage_times"], state["teacher_changed"]
        self.best = state.get("best", {})  # absent from a checkpoint written before keep_best
        try:
            for role, weights in state["models"].items():
                self.p.models[role].load_state_dict(weights)
            for name, weights in state["objectives"].items():
                load_module_state(self.p.objectives[name], weights)
            for provider, weights in zip(self.p.providers, state["features"]):
                load_module_state(provider, weights)
        except (KeyError, RuntimeError, ValueError) as err:  # a model or loss the checkpoint does not describe
            first = str(err).strip().splitlines()[0][:200]
            raise KDistillError(f"resume: the checkpoint does not fit the models and losses of the run's recipe.yaml "
                                f"({first}); was recipe.yaml edited? Restore it, or start the run again "
                                "(--overwrite).") from None

    def save(self, i: int, loop: dict | None) -> None:
        """A checkpoint before stage ``i``'s step ``loop`` (None: stage ``i`` not started)."""
        recipe = self.p.recipe
        if not distributed.is_main() or not recipe.checkpoint.enabled:
            return
        teacher_trained = recipe.trains("teacher")
        state = {"version": CHECKPOINT_VERSION, "stage": i, "loop": loop, "ends": self.ends, "starts": self.starts,
                 "stage_times": self.stage_times, "teacher_changed": self.teacher_changed,
                 "metrics_lines": self.out.lines, "best": self.best, "recipe": dump_recipe(recipe),
                 "models": {r: m.state_dict() for r, m in self.p.models.items() if r != "teacher" or teacher_trained},
                 "objectives": {n: module_state(o) for n, o in self.p.objectives.items()},
                 "features": [module_state(f) for f in self.p.providers]}
        name = checkpoint_name(i, loop["epoch"], loop["step"]) if loop is not None else checkpoint_name(i, 0, 0)
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

    def prepare(self, stage, resumed: dict | None) -> nn.Module | None:
        """Before ``stage``: its starting weights, the teacher frozen or trainable, the objective
        prepared (``resumed``: the checkpoint the stage resumes from, or None). Returns the frozen
        teacher the stage learns from (or None)."""
        resuming = resumed is not None
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
            load_module_state(objective, resumed["objectives"][stage.name])
        return teacher


def fit(pipeline, out, progress: bool = True, resume: dict | None = None,
        stop: threading.Event | None = None) -> dict[str, float]:
    """Train the recipe's stages in order; returns the seconds each stage took.

    Writes checkpoints into ``out`` (``recipe.checkpoint``); ``resume``: a checkpoint's state,
    from which training continues exactly; ``stop``: set to checkpoint and stop cleanly.
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
        resuming = resume is not None and i == state.first
        teacher = state.prepare(stage, resume if resuming else None)
        model = pipeline.models[stage.train]

        def on_epoch_end(epoch: int, terms: dict, stage=stage, model=model, teacher=teacher):
            record = {"stage": stage.name, "model": stage.train, "epoch": epoch + 1, "train": terms}
            line = f"[{stage.name}] epoch {epoch + 1}/{stage.epochs} loss {terms['loss']:.4f}"
            evaluate_now = (epoch + 1) % stage.eval_every == 0 or epoch + 1 == stage.epochs
            if evaluate_now and distributed.is_main():  # other ranks log nothing
                record[eval_name], words = pipeline.family.epoch_metrics(model, teacher, eval_set, pipeline.device)
                line += f" {eval_name} {words}"
                if progress:
                    print(line, flush=True)
            if evaluate_now and stage.keep_best:  # the recipe guarantees a validation set
                score = pipeline.family.selection_score(record[eval_name]) if eval_name in record else None
                state.judge_epoch(stage, epoch + 1, model, score)
            out.log(record)

        hooks = Hooks(on_epoch_end=on_epoch_end, progress=progress, desc=stage.name,
                      checkpoint=(lambda loop, i=i: state.save(i, loop)) if recipe.checkpoint.enabled else None,
                      checkpoint_every=recipe.checkpoint.every, stop=stop or threading.Event())
        x, y = pipeline.stage_data(stage)
        result = train_stage(model, pipeline.objectives[stage.name], x, y, stage, pipeline.device, teacher,
                             seed=recipe.seed + i, memo=pipeline.memo, hooks=hooks, loader=recipe.data.loader,
                             resume=resume["loop"] if resuming else None)
        state.stage_times[stage.name] = result["seconds"]
        if stage.keep_best:
            kept = state.keep_best(stage, model)
            if progress and distributed.is_main():
                print(kept, flush=True)
        state.ends[stage.name] = snapshot(model)
    if state.first < len(recipe.stages):
        # every stage trained: a run killed from here on resumes into the final evaluation
        state.save(len(recipe.stages), None)
    return state.stage_times
