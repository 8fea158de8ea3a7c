"""Setting up a run: device, data splits, models, and each stage's objective with its adapters.

Everything here runs before any training, so that bad input fails early.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from kdistill import distributed
from kdistill.data import UNLABELLED, ArraySource, Preprocess, Splits, as_source, load_source, read_preprocess, split
from kdistill.errors import KDistillError
from kdistill.models.adapters import adapter_key, build_adapter, build_adapters
from kdistill.models.ensemble import TeacherEnsemble, main_teacher
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


def prepare_data(recipe: Recipe, data=None, preprocess: Preprocess | None = None) -> tuple[Splits, dict]:
    """Load, preprocess and split the data. ``data`` may be ``(train, test)`` of user data;
    ``preprocess``: the one a finished run used (rebuilding it), instead of choosing from the recipe.

    Returns:
        (splits, info): info holds the sample counts and, for float inputs, ``normalize`` (how
        the preprocessing was chosen: teacher, data or none) and ``preprocess``
        (``Preprocess.to_dict()``: what the models' inputs are, from raw inputs).
    """
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
    _check_labels(recipe, train, test)
    info = {"train": len(train), "test": len(test)}
    before = None
    if train.x.is_floating_point():  # not token ids
        info["normalize"], preprocess = choose_preprocess(recipe, train, custom=data is not None, given=preprocess)
        info["preprocess"] = preprocess.to_dict()
        if preprocess.standardizes or preprocess.divide_by != train.divided_by:
            before = test.x[:TEACHER_CHECK_SAMPLES].clone()
            for source in (train, test):
                source.x = to_model_inputs(preprocess, source)
    elif spec.normalize in ("teacher", "data"):
        raise KDistillError(f"data.normalize: {spec.normalize!r} does not apply to {train.x.dtype} inputs "
                            "(token ids); drop it or pass float inputs.")
    split_seed = recipe.seed if spec.split_seed is None else spec.split_seed
    splits = split(train, test, spec.labelled, spec.val, spec.transfer, seed=split_seed)
    splits.test_before_preprocess = before
    return splits, info


TEACHER_CHECK_SAMPLES = 2000  # test inputs the teacher is judged on before and after preprocessing


def _check_labels(recipe: Recipe, train: ArraySource, test: ArraySource) -> None:
    """Labels are classes 0..K-1, or -1 for a training sample without a label; a classify run's
    test set is scored by its labels, so it needs them all."""
    for part, source in (("training", train), ("test", test)):
        if len(source) and int(source.y.min()) < UNLABELLED:
            raise KDistillError(f"data: a {part} label is {int(source.y.min())}; labels are classes 0..K-1, "
                                "or -1 for a training sample without a label.")
    unlabelled = int((test.y == UNLABELLED).sum())
    if recipe.task == "classify" and unlabelled:
        raise KDistillError(f"data: {unlabelled} of the {len(test)} test labels are -1 (unlabelled), but a classify "
                            "run scores the test set by its labels; label them, or move them into the training set.")


def choose_preprocess(recipe: Recipe, train: ArraySource, custom: bool,
                      given: Preprocess | None = None) -> tuple[str, Preprocess]:
    """How the float inputs are preprocessed, from ``data.normalize``: (teacher|data|none|run, Preprocess).

    ``auto`` is the teacher's recorded preprocessing if ``teacher.weights`` records one, else the
    training data's statistics when this run trains the teacher, or when there is no teacher and
    the source is built in (not ``custom``: the user's own data), else none. ``given`` (a
    finished run's own, mode ``run``) overrides all of these.
    """
    source = recipe.data.source if not custom else "custom"
    if given is not None:
        return "run", _teacher_preprocess(given, train, source)
    mode, teacher = recipe.data.normalize, recipe.teacher
    weights = teacher.weights if teacher is not None else None
    recorded = read_preprocess(weights, "teacher") if weights else None
    if mode == "auto":
        trains_teacher = any(s.train == "teacher" for s in recipe.stages)
        mode = ("teacher" if recorded is not None else
                "data" if trains_teacher or (teacher is None and not custom) else "none")
    if mode == "teacher":
        if recorded is None:
            where = "the teacher has no weights file"
            if weights:
                where = f"teacher.weights {weights} {'records none' if Path(weights).is_file() else 'is not found'}"
            raise KDistillError(f"data.normalize: 'teacher' reads the preprocessing recorded with teacher.weights, "
                                f"but {where}; set data.normalize to data or none.")
        return mode, _teacher_preprocess(recorded, train, source)
    if mode == "data":
        return mode, Preprocess.fit(train.x, train.divided_by)
    return mode, Preprocess(train.divided_by)


def _teacher_preprocess(recorded: Preprocess, train: ArraySource, source: str) -> Preprocess:
    """A recorded preprocessing (a teacher's, or a finished run's), its division checked against
    (or applied to) the data's."""
    if recorded.divide_by is None or recorded.divide_by == train.divided_by:  # None: legacy, as loaded
        return Preprocess(train.divided_by, recorded.mean, recorded.std)
    if train.divided_by != 1.0:
        raise KDistillError(f"data.normalize: the teacher was trained on inputs divided by {recorded.divide_by:g} "
                            f"(recorded in teacher.weights), but source {source!r} divides them by "
                            f"{train.divided_by:g}; train a teacher on this data, or set data.normalize: data.")
    if len(train) and float(train.x.abs().max()) <= 1.0:
        raise KDistillError(f"data: the teacher takes raw inputs divided by {recorded.divide_by:g} (recorded in "
                            f"teacher.weights), but the training inputs already lie in [-1, 1]; pass the raw "
                            f"inputs, or ArraySource(x, y, divided_by={recorded.divide_by:g}) for divided ones.")
    return recorded


def to_model_inputs(preprocess: Preprocess, source: ArraySource) -> torch.Tensor:
    """The inputs of ``source`` (already divided by ``source.divided_by``) preprocessed for the models."""
    x = source.x
    if preprocess.divide_by != source.divided_by:  # raw inputs (divided_by 1): the teacher's division
        x = x / (preprocess.divide_by / source.divided_by)
    return preprocess.standardize(x)


def check_teacher_preprocess(recipe: Recipe, models: dict, splits: Splits, info: dict, device) -> None:
    """Judge a teacher this run does not train on up to 2,000 test inputs before and after the
    preprocessing, and print both: a drop shows inputs unlike those it was trained on.

    Adds ``teacher_accuracy: {samples, before, after}`` to ``info`` (prepare_data's data info),
    unless nothing was preprocessed, there is no teacher, the run trains it, or the task is embed.
    """
    from kdistill.evaluate import predict

    before = splits.test_before_preprocess
    if (before is None or "teacher" not in models or recipe.task != "classify"
            or any(s.train == "teacher" for s in recipe.stages)):
        return
    teacher = main_teacher(models["teacher"])
    labels = splits.test_set.y[: len(before)]
    try:
        accuracy = [(predict(teacher, x, device).argmax(1) == labels).float().mean().item()
                    for x in (before, splits.test_set.x[: len(before)])]
    except (RuntimeError, ValueError, TypeError, IndexError):  # inputs the model refuses: the dry pass says so
        return
    info["teacher_accuracy"] = {"samples": len(before), "before": accuracy[0], "after": accuracy[1]}
    if distributed.is_main():
        print(f"teacher accuracy on {len(before)} test inputs: {accuracy[0]:.4f} before preprocessing, "
              f"{accuracy[1]:.4f} after (data.normalize: {info.get('normalize')})", flush=True)


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
    try:
        with FeatureTaps(model, names, owner, derived) as taps, torch.no_grad():
            try:
                out = model(sample)
            except (RuntimeError, ValueError, TypeError, IndexError) as err:  # the model refused the data
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise KDistillError(
                    f"{owner}: the model fails on the data's inputs of shape {tuple(sample.shape[1:])} "
                    f"({sample.dtype}): {first[:300]}; make {owner}.args fit the data (e.g. in_features, "
                    "image_size, in_channels).") from None
            feats = taps.collect(out)
    finally:
        model.train(was_training)
    return feats


def check_stage_data(recipe: Recipe, splits: Splits) -> None:
    """Every stage has samples to train on (a labelled stage needs data.labelled > 0)."""
    for i, stage in enumerate(recipe.stages):
        x, _ = stage_data(splits, stage.data)
        if len(x) == 0:
            fix = {"labelled": "set data.labelled above 0", "transfer": "leave training samples outside the "
                   "labelled and val sets (data.labelled, data.val, data.transfer)"}.get(stage.data, "give more data")
            raise KDistillError(f"stages.{i} ({stage.name}): trains on data '{stage.data}', which holds no samples; "
                                f"{fix}, or drop the stage.")


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
