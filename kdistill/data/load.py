"""The run's data from its recipe: loaded, checked, preprocessed for the models and split.

``prepare_data`` gives the splits every stage draws from (``stage_data``); float inputs are
preprocessed as ``data.normalize`` chooses (see ``choose_preprocess``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from kdistill.data import UNLABELLED, ArraySource, Preprocess, Splits, as_source, load_source, read_preprocess, split
from kdistill.errors import KDistillError
from kdistill.recipe import TEXT_SOURCES, Recipe


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
        trains_teacher = recipe.trains("teacher")
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


def check_stage_data(recipe: Recipe, splits: Splits) -> None:
    """Every stage has samples to train on (a labelled stage needs data.labelled > 0)."""
    for i, stage in enumerate(recipe.stages):
        x, _ = stage_data(splits, stage.data)
        if len(x) == 0:
            fix = {"labelled": "set data.labelled above 0", "transfer": "leave training samples outside the "
                   "labelled and val sets (data.labelled, data.val, data.transfer)"}.get(stage.data, "give more data")
            raise KDistillError(f"stages.{i} ({stage.name}): trains on data '{stage.data}', which holds no samples; "
                                f"{fix}, or drop the stage.")


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
def class_names(recipe, num_classes: int) -> list[str]:
    """The names of the recipe's classes where the data source knows them, else their numbers."""
    if recipe.data.source == "fashion_mnist" and recipe.data.path is None and num_classes == 10:
        return FASHION_MNIST_CLASSES
    if recipe.data.source == "wordnet":
        from kdistill.data.text import load_wordnet

        return load_wordnet(recipe.data.path, recipe.data.text.pos, examples=False).classes
    return [str(i) for i in range(num_classes)]
