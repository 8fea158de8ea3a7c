"""The run's data from its recipe: loaded, checked, preprocessed for the models and split.

``prepare_data`` gives the splits every stage draws from (``stage_data``); float inputs are
preprocessed as ``data.normalize`` chooses (see ``choose_preprocess``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdistill.data import UNLABELLED, ArraySource, Preprocess, Splits, as_source, read_preprocess, split
from kdistill.data.image_processor import processor_preprocess
from kdistill.data.labels import names_differ, names_shown
from kdistill.data.samples import Inputs
from kdistill.data.source import Source, say
from kdistill.data.weights_meta import read_classes
from kdistill.errors import KDistillError, shown
from kdistill.recipe.schema import Recipe
from kdistill.recipe.sources import SOURCES


def prepare_data(recipe: Recipe, data=None, preprocess: Preprocess | None = None) -> tuple[Splits, dict]:
    """Load, check and split the data, and choose how its inputs are made ready for the models.
    ``data`` may be ``(train, test)`` of user data; ``preprocess``: the one a finished run used
    (rebuilding it), instead of choosing from the recipe. Nothing is copied: the splits are
    index sets over the sources, whose inputs are prepared batch by batch.

    Returns:
        (splits, info): info holds the sample counts and, for float inputs, ``normalize`` (how
        the preprocessing was chosen: teacher, data or none) and ``preprocess``
        (``Preprocess.to_dict()``: what the models' inputs are, from raw inputs).
    """
    spec = recipe.data
    if isinstance(data, Splits):
        return data, {}
    return _prepare(recipe, spec, data, preprocess)


def _prepare(recipe: Recipe, spec, data, preprocess: Preprocess | None) -> tuple[Splits, dict]:
    train, test = load_sources(recipe, data)
    for part, source in (("training", train), ("test", test)):
        check_finite(source, part)
    _check_labels(recipe, train, test)
    check_teacher_classes(recipe, train)
    info = {"train": len(train), "test": len(test)}
    skipped = [*getattr(train, "skipped", []), *getattr(test, "skipped", [])]
    if skipped:  # data.images.skip_unreadable: the count in the summary, the list for skipped_files.txt
        info["skipped_files"], info["_skipped"] = len(skipped), skipped
    split_seed = recipe.seed if spec.split_seed is None else spec.split_seed
    splits = split(train, test, spec.labelled, spec.val, spec.transfer, seed=split_seed)
    if train.tokens:
        if spec.normalize in ("teacher", "data"):
            raise KDistillError(f"data.normalize: {shown(spec.normalize)} does not apply to token ids; drop it "
                                "or pass float inputs.")
        return splits, info
    info["inputs"] = input_scaling(train)
    if data is not None or spec.says_scaling:  # arrays scaled by their dtype: say which rule applied
        say(scaling_line(info["inputs"]))
    info["normalize"], preprocess = choose_preprocess(recipe, train, custom=data is not None, given=preprocess)
    info["preprocess"] = preprocess.to_dict()
    if preprocess.standardizes or preprocess.divide_by != train.units:  # the teacher may be judged before / after
        spread = torch.linspace(0, len(test) - 1, min(TEACHER_CHECK_SAMPLES, len(test))).long().unique()
        splits.test_before_preprocess = Inputs(test, spread, Preprocess(test.units).relative_to(test.divided_by))
    return splits.prepared(lambda source: preprocess.relative_to(source.divided_by)), info


def input_scaling(source: Source) -> dict:
    """What was done to the stored inputs to reach units (``source.stored_scale``'s one rule,
    whichever door the arrays came through): ``{dtype, divided_by}``, and the values' ``range``
    for floats held in memory."""
    x = source.x if source.in_memory else source.fetch(torch.tensor([0]))
    entry = {"dtype": str(x.dtype).replace("torch.", ""), "divided_by": source.units}
    if source.in_memory and x.is_floating_point() and len(x):
        entry["range"] = [float(x.min()), float(x.max())]
    return entry


def scaling_line(entry: dict) -> str:
    """The one info line saying how the inputs were scaled (``input_scaling``'s entry)."""
    if entry["divided_by"] != 1:
        return (f"data: {entry['dtype']} inputs divided by {entry['divided_by']:g} (uint8 pixels to [0, 1], for "
                "arrays from Python and .npy files alike)")
    line = f"data: {entry['dtype']} inputs taken as they are"
    low, high = entry.get("range", (0.0, 0.0))
    if high > 1:
        line += (f" (values {low:.3g}..{high:.3g}; pixels 0..255 given as uint8 would be divided by 255: pass them "
                 "as uint8, or divide them first)")
    return line


TEACHER_CHECK_SAMPLES = 2000  # test inputs the teacher is judged on before and after preprocessing
STATS_SAMPLES = 5000  # samples of a source not in memory that statistics and checks read
STATS_BATCH = 256


def load_sources(recipe: Recipe, data=None) -> tuple[Source, Source]:
    """(train, test) sources: the recipe's, or the user's own ``data``."""
    if data is not None:
        return tuple(as_source(d, w) for d, w in zip(data, ("training", "test")))
    loader = SOURCES[recipe.data.source].loader
    if loader is None:
        raise KDistillError(f"data.source: {shown(recipe.data.source)} needs the data passed from Python: "
                            "run(recipe, data=(train, test)).")
    return loader(recipe.data, recipe)


def in_units(source: Source):
    """Batches of the source's inputs in units (stored values / ``scale``), float: all of them
    for a source in memory (one batch), else an evenly spread sample of ``STATS_SAMPLES``."""
    if source.in_memory:
        x = source.x.float()
        yield x / source.scale if source.scale != 1 else x
        return
    rows = torch.linspace(0, len(source) - 1, min(len(source), STATS_SAMPLES)).long().unique()
    for part in rows.split(STATS_BATCH):
        x = source.fetch(part).float()
        yield x / source.scale if source.scale != 1 else x


def _float_inputs(source: Source) -> bool:
    """Whether the stored inputs are floats (one sample is fetched to see, unless held in memory)."""
    x = source.x if source.in_memory else source.fetch(torch.tensor([0]))
    return x.is_floating_point()


def check_finite(source: Source, part: str) -> None:
    """No NaN or infinite input (a source not in memory: none in the samples ``in_units`` reads).
    Integers (pixels as bytes, token ids) hold none: nothing is read."""
    if source.tokens or not len(source) or not _float_inputs(source):
        return
    seen = 0
    for x in in_units(source):
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten()
            where = (f"the first is sample {seen + int(bad[0])}" if source.in_memory
                     else f"in a sample of {STATS_SAMPLES}")
            raise KDistillError(f"data: {len(bad)} {part} inputs hold NaN or infinite values ({where}); "
                                "clean or drop them first.")
        seen += len(x)


def _check_labels(recipe: Recipe, train: ArraySource, test: ArraySource) -> None:
    """Labels are classes 0..K-1, or -1 for a training sample without a label (each source
    checked them by ``data/labels.py``'s rule); ``data.classes`` names every class the labels
    use, and then sets the number of classes (what a family needs of the labels besides:
    ``Family.check_data``)."""
    for part, source in (("training", train), ("test", test)):
        if len(source) and int(source.y.min()) < UNLABELLED:
            raise KDistillError(f"data: a {part} label is {int(source.y.min())}; labels are classes 0..K-1, "
                                "or -1 for a training sample without a label.")
    classes = recipe.data.classes
    if classes is not None:
        for part, source in (("training", train), ("test", test)):
            own = getattr(source, "classes", None)
            if own is not None and list(own) != list(classes):  # names the source numbered its own way
                missing = [str(n) for n in own if n not in classes]
                if missing:
                    raise KDistillError(f"data.classes: the {part} data's class {shown(missing[0])} is not one of "
                                        f"{names_shown(classes)} (the data's: {names_shown(own)}); list every class in "
                                        "data.classes.")
                order = torch.tensor([list(classes).index(n) for n in own] + [UNLABELLED])
                source.y, source.classes = order[source.y], list(classes)  # -1 indexes the last: stays -1
            if len(source) and int(source.y.max()) >= len(classes):
                raise KDistillError(f"data.classes: names {len(classes)} classes but a {part} label is "
                                    f"{int(source.y.max())}; name every class (ids 0..{int(source.y.max())}).")
        train.num_classes = test.num_classes = len(classes)


def choose_preprocess(recipe: Recipe, train: Source, custom: bool,
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
    if recorded is None:  # a Hugging Face image model's processor config, if it is one
        recorded = processor_preprocess(recipe)
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
        if train.in_memory:  # all of it, as one tensor
            return mode, Preprocess.fit(next(in_units(train)), train.units)
        return mode, Preprocess.fit_batches(in_units(train), train.units)
    return mode, Preprocess(train.units)


def _teacher_preprocess(recorded: Preprocess, train: Source, source: str) -> Preprocess:
    """A recorded preprocessing (a teacher's, or a finished run's), its division checked against
    (or applied to) the data's."""
    units = train.units
    if recorded.divide_by is None or recorded.divide_by == units:  # None: legacy, as loaded
        return Preprocess(units, recorded.mean, recorded.std)
    if units != 1.0:
        raise KDistillError(f"data.normalize: the teacher was trained on inputs divided by {recorded.divide_by:g} "
                            f"(recorded in teacher.weights), but source {shown(source)} divides them by "
                            f"{units:g}; train a teacher on this data, or set data.normalize: data.")
    if len(train) and max(float(x.abs().max()) for x in in_units(train)) <= 1.0:
        raise KDistillError(f"data: the teacher takes raw inputs divided by {recorded.divide_by:g} (recorded in "
                            f"teacher.weights), but the training inputs already lie in [-1, 1]; pass the raw "
                            f"inputs, or ArraySource(x, y, divided_by={recorded.divide_by:g}) for divided ones.")
    return recorded


def stage_data(splits: Splits, which: str) -> tuple[Inputs, torch.Tensor]:
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


def known_class_names(recipe, source=None) -> list[str] | None:
    """The names of the run's classes where they are known: ``data.classes``, else the data
    source's (``source.classes``: folder names, names in a label column, a ClassLabel's), else a
    source's own (``data.class_names()``: Fashion-MNIST's, WordNet's); None where the classes are
    only numbers."""
    if recipe.data.classes is not None:
        return list(recipe.data.classes)
    known = [str(c) for c in getattr(source, "classes", None) or []]
    if known and known != [str(i) for i in range(len(known))]:  # class ids named by their numbers: no names
        return known
    return recipe.data.class_names()


def class_names(recipe, num_classes: int, source=None) -> list[str]:
    """The names of the ``num_classes`` classes of a model's outputs: the known names
    (``known_class_names``) when there are as many, else their numbers."""
    known = known_class_names(recipe, source)
    if known is not None and len(known) == num_classes:
        return known
    return [str(i) for i in range(num_classes)]


def check_teacher_classes(recipe: Recipe, source: Source) -> None:
    """A teacher whose weights record class names (kdistill records them) is used only with data
    whose known class names are the same, in the same order: else its outputs mean other classes."""
    teacher = recipe.teacher
    if teacher is None or not teacher.weights:
        return
    recorded = read_classes(teacher.weights, "teacher")
    names = known_class_names(recipe, source) if recorded is not None else None
    if names is None:
        return
    differ = names_differ(names, recorded)
    if differ:
        raise KDistillError(f"teacher.weights: the teacher was trained on other classes, {differ} (the data's vs "
                            "the teacher's); set data.classes to the teacher's names in its order.")
