"""Setting up a run: device, data splits, models, and each stage's objective with its adapters.

Everything here runs before any training, so that bad input fails early.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdistill.data import ArraySource, Splits, as_source, load_source, normalize, split
from kdistill.errors import KDistillError
from kdistill.models.adapters import adapter_key, build_adapter, build_adapters
from kdistill.models.ensemble import TeacherEnsemble
from kdistill.models.subnet import pick_layers, sub_network
from kdistill.models.taps import OUTPUT, FeatureTaps, resolve_module
from kdistill.models.weights import load_weights, snapshot
from kdistill.models.zoo import build_model
from kdistill.objective import Objective, build_objective
from kdistill.recipe import TEXT_SOURCES, Recipe
from kdistill.shallow import EMBEDDING, PROTOTYPES, PrototypeHead


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KDistillError(f"device: {name!r} asked for but CUDA is not available; use device=cpu or auto.")
    return torch.device(name)


def prepare_data(recipe: Recipe, data=None) -> tuple[Splits, dict]:
    """Load, normalise and split the data. ``data`` may be ``(train, test)`` of user data."""
    spec = recipe.data
    if data is None and spec.source in TEXT_SOURCES:
        train, test = load_text_data(recipe)
    elif data is None:
        train, test = load_source(spec.source, spec.path)
    elif isinstance(data, Splits):
        return data, {}
    else:
        train, test = (as_source(d, w) for d, w in zip(data, ("training", "test")))
        train, test = copy.copy(train), copy.copy(test)
    for part, source in (("training", train), ("test", test)):
        if source.x.is_floating_point() and not torch.isfinite(source.x).all():
            bad = (~torch.isfinite(source.x.flatten(1))).any(1).nonzero().flatten()
            raise KDistillError(f"data: {len(bad)} {part} inputs hold NaN or infinite values (the first is sample "
                                f"{int(bad[0])}); clean or drop them first.")
    info = {"train": len(train), "test": len(test)}
    if spec.normalize and train.x.is_floating_point():  # not token ids
        info["mean"], info["std"] = normalize(train, test)
    split_seed = recipe.seed if spec.split_seed is None else spec.split_seed
    splits = split(train, test, spec.labelled, spec.val, spec.transfer, seed=split_seed)
    return splits, info


def load_text_data(recipe: Recipe) -> tuple[ArraySource, ArraySource]:
    """(train, test) of a text source, tokenised with the teacher's tokenizer (or data.text.tokenizer)."""
    from kdistill.data.text import read_text_source, split_texts, tokenize_texts
    from kdistill.models.hf import load_tokenizer

    spec, text = recipe.data, recipe.data.text
    name = text.tokenizer or (recipe.teacher.args.get("path") or recipe.teacher.args.get("tokenizer")
                              if recipe.teacher is not None else None)
    if not name:
        raise KDistillError("data.text.tokenizer: text needs a tokenizer; set it, or give the teacher "
                            "as model: hf with args.path.")
    tokenizer = load_tokenizer(name)
    texts = read_text_source(spec.source, spec.path, text.pos, text.examples, text.text_column, text.label_column)
    split_seed = recipe.seed if spec.split_seed is None else spec.split_seed
    sources = []
    for part in split_texts(texts, text.test, split_seed):
        x = tokenize_texts(part.texts, tokenizer, text.max_length)
        sources.append(ArraySource(x, torch.tensor(part.labels), num_classes=len(texts.classes)))
    return sources[0], sources[1]


def stage_data(splits: Splits, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) a stage trains on; transfer-set labels are -1 (withheld)."""
    lab, tra = splits.labelled_set, splits.transfer_set
    if which == "labelled":
        return lab.x, lab.y
    if which == "transfer":
        return tra.x, tra.y
    if which == "labelled+transfer":
        return splits.pool_set.x, splits.pool_set.y
    # 'full': the whole training split with every label, only for stages that train a teacher
    return splits.pool_set.x, splits.pool_labels


def build_models(recipe: Recipe, teacher: nn.Module | None, student: nn.Module | None, device) -> dict:
    """Teacher (frozen unless a stage trains it), student and, if a stage trains one, the baseline:
    the same student architecture from the same initial weights, trained without distillation.
    A student ``from_teacher`` is cut from the teacher once the teacher holds its weights."""
    torch.manual_seed(recipe.seed)
    models: dict[str, nn.Module] = {}
    subnet = recipe.student.from_teacher if student is None and recipe.student is not None else None
    if student is None and recipe.student is not None and subnet is None:
        student = build_model(recipe.student.model, **recipe.student.args)
    if recipe.teacher is not None or teacher is not None:
        if teacher is None:
            teacher = build_model(recipe.teacher.model, **recipe.teacher.args)
        if recipe.teacher is not None and recipe.teacher.weights:
            load_weights(teacher, recipe.teacher.weights, "teacher")
        if subnet is not None:
            student = cut_student(teacher, subnet)
        if recipe.teachers:
            extras = {}
            for name, spec in recipe.teachers.items():
                extras[name] = build_model(spec.model, **spec.args)
                if spec.weights:
                    load_weights(extras[name], spec.weights, f"teachers.{name}")
            teacher = TeacherEnsemble(teacher, extras)
        models["teacher"] = teacher
    if student is not None:
        if recipe.student is not None and recipe.student.weights:
            load_weights(student, recipe.student.weights, "student")
        models["student"] = student
    elif any(s.train in ("student", "baseline") for s in recipe.stages):
        raise KDistillError("student: a stage trains the student but the recipe names none; add a "
                            "'student' section (model, args) or pass student= from Python.")
    if any(s.train == "baseline" for s in recipe.stages):
        models["baseline"] = copy.deepcopy(student)
    return {k: m.to(device) for k, m in models.items()}


def cut_student(teacher: nn.Module, spec) -> nn.Module:
    """The sub-network of ``teacher`` a recipe's ``student.from_teacher`` describes."""
    keep = spec.keep
    if spec.layers is not None:
        stack = getattr(teacher, "layer_stack", None)
        if stack is None:
            raise KDistillError("student.from_teacher.layers: needs a transformer teacher (model: hf); "
                                "for other models name the blocks, e.g. keep: {stages.1: [0]}.")
        keep = pick_layers(len(resolve_module(teacher, stack)), spec.layers, spec.pick)
    return sub_network(teacher, keep, heads=spec.heads, ffn=spec.ffn)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _dry_features(model: nn.Module, names: list[str], owner: str, derived: dict, sample: torch.Tensor) -> dict:
    """Features of one forward pass in eval mode, without gradients (shapes for adapters)."""
    was_training = model.training
    model.eval()
    with FeatureTaps(model, names, owner, derived) as taps, torch.no_grad():
        feats = taps.collect(model(sample))
    model.train(was_training)
    return feats


def build_stage_objectives(recipe: Recipe, models: dict, sample: torch.Tensor, pca=None,
                           num_classes: int = 0) -> tuple[dict[str, Objective], nn.Module | None]:
    """One objective per stage, with taps checked and adapters built from one dry forward pass.

    Runs before any training, so a bad tap name or loss argument fails early. Adapters are
    shared across stages by (student tap, teacher tap); with an embedding section the teacher
    feature ``embedding`` (the PCA) and the student feature ``prototypes`` are available.
    Returns (objectives by stage name, ``Sequential(embedding adapter, PrototypeHead)`` or None).
    """
    shared = nn.ModuleDict()
    teacher_derived, student_derived, heads = {}, {}, nn.ModuleDict()
    spec = recipe.embedding
    if spec is not None:
        teacher_derived = {EMBEDDING: (spec.teacher, pca)}
        s_feats = _dry_features(models["student"], [spec.student], "student", {}, sample)
        adapter = build_adapter(s_feats[spec.student].shape[1:], (spec.dim,)).to(sample.device)
        shared[adapter_key(spec.student, EMBEDDING)] = adapter
        heads[PROTOTYPES] = nn.Sequential(adapter, PrototypeHead(num_classes, spec.dim)).to(sample.device)
        student_derived = {PROTOTYPES: (spec.student, heads[PROTOTYPES])}
    objectives = {}
    for stage in recipe.stages:
        objective = build_objective([t.model_dump() for t in stage.loss])
        objective.teacher_derived, objective.student_derived = teacher_derived, student_derived
        s_names, t_names = objective.taps()
        if PROTOTYPES in s_names:
            objective.heads = nn.ModuleDict({PROTOTYPES: heads[PROTOTYPES]})
        trained = models[stage.train]
        s_feats = _dry_features(trained, s_names, "student", student_derived, sample)
        if objective.uses_teacher and stage.train != "teacher":
            t_feats = _dry_features(models["teacher"], t_names, "teacher", teacher_derived, sample)
            _check_outputs_match(objective, s_feats, t_feats)
            pairs = objective.feature_pairs()
            for key, adapter in build_adapters(pairs, s_feats, t_feats).items():
                if key not in shared:
                    shared[key] = adapter.to(sample.device)
            objective.adapters = nn.ModuleDict({adapter_key(s, t): shared[adapter_key(s, t)] for s, t in pairs})
        objectives[stage.name] = objective.to(sample.device)
    return objectives, heads[PROTOTYPES] if PROTOTYPES in heads else None


def _check_outputs_match(objective: Objective, s_feats: dict, t_feats: dict) -> None:
    """A term comparing the student's output with a teacher's needs the same classes on both sides."""
    for term in objective.terms:
        students = term.student if isinstance(term.student, tuple) else (term.student,)
        teachers = term.teacher if isinstance(term.teacher, tuple) else (term.teacher,)
        if OUTPUT not in students:
            continue
        for t in teachers:
            if t is None or t.split(":")[-1] != OUTPUT:
                continue
            ks, kt = s_feats[OUTPUT].shape[-1], t_feats[t].shape[-1]
            if ks != kt:
                who = "teacher" if t == OUTPUT else f"teacher {t.split(':')[0]!r}"
                raise KDistillError(f"loss {term.name!r}: the {who} outputs {kt} classes but the student {ks}; "
                                    f"give the student num_classes={kt} (model args).")


def set_weight_anchors(objective: Objective, model: nn.Module, initial: dict, ends: dict,
                       stage_start: dict | None = None) -> None:
    """Give every pull-to-start term its theta_0: ``init``, ``stage`` (the weights the stage
    started from: ``stage_start``, default now) or an earlier stage's end."""
    for term in objective.terms:
        if not hasattr(term.loss, "set_start"):
            continue
        start = term.loss.start
        if start == "stage":
            source = stage_start if stage_start is not None else snapshot(model)
        elif start == "init":
            source = initial
        elif start in ends:
            source = ends[start]
        else:
            raise KDistillError(
                f"loss {term.name!r}: start {start!r} is not init, stage or an earlier stage ({list(ends)})."
            )
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        term.loss.set_start([source[n] for n in names])
