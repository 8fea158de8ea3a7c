"""The one builder: recipe -> device -> data -> models -> feature providers -> objectives.

``build_pipeline`` is how every job starts (run, cache, eval, export and the benches), so they
all see the same data, models and objectives for the same recipe. Everything here runs before
any training, so that bad input fails early.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from kdistill import distributed
from kdistill.data import Preprocess, Splits
from kdistill.data.load import TEACHER_CHECK_SAMPLES, check_stage_data, prepare_data, stage_data
from kdistill.data.samples import Inputs
from kdistill.errors import KDistillError, shown
from kdistill.evaluate.teacher_check import judge_teacher, recorded_accuracy
from kdistill.families import Family, family_of
from kdistill.models.ensemble import TeacherEnsemble, main_teacher
from kdistill.models.hf import set_max_length
from kdistill.models.infer import freeze, predict
from kdistill.models.subnet import pick_layers, sub_network
from kdistill.models.taps import resolve_module
from kdistill.models.weights import load_weights
from kdistill.models.zoo import build_model, builds_from_teacher, with_data_defaults
from kdistill.objective.build import build_providers, build_stage_objectives
from kdistill.objective.core import Objective
from kdistill.objective.features import FeatureProvider
from kdistill.recipe.schema import Recipe
from kdistill.train.teacher import TeacherMemo


@dataclass
class Pipeline:
    """Everything a recipe builds before training.

    Args:
        models: ``teacher`` (frozen unless a stage trains it), ``student``, ``baseline``.
        providers: the feature providers the recipe asks for (``objective.features``).
        objectives: one per stage, by stage name (empty when built for evaluation only).
        family: how the models are judged and exported (``families``).
        memo: the teacher outputs computed so far, shared by the stages.
    """

    recipe: Recipe
    device: torch.device
    splits: Splits
    data_info: dict
    models: dict[str, nn.Module]
    family: Family
    providers: list[FeatureProvider] = field(default_factory=list)
    objectives: dict[str, Objective] = field(default_factory=dict)
    memo: TeacherMemo = field(default_factory=TeacherMemo)

    def stage_data(self, stage) -> tuple[Inputs, torch.Tensor]:
        """(x, y) the stage trains on; labels a stage may not read are -1."""
        return stage_data(self.splits, stage.data)


def build_pipeline(recipe: Recipe, teacher: nn.Module | None = None, student: nn.Module | None = None, data=None,
                   *, preprocess: Preprocess | None = None, train: bool = True) -> Pipeline:
    """Build a recipe's device, data, models and, with ``train``, its feature providers and
    stage objectives (checked by one dry forward pass).

    Args:
        teacher, student: the user's own modules, in place of the recipe's model names.
        data: the user's own ``(train, test)`` data (``kdistill.data.as_source``) or Splits.
        preprocess: a finished run's preprocessing (rebuilding it), instead of choosing one.
        train: False to build for evaluation or export only: no objectives, no teacher check.
    """
    device = resolve_device(recipe.device)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    family = family_of(recipe)
    splits, info = prepare_data(recipe, data, preprocess)
    family.check_data(splits)
    models = build_models(recipe, teacher, student, device, data_model_args(family, splits),
                          lambda: calibration_batch(splits, device))
    match_text_length(recipe, models)
    family.check_models(models)
    made_from_teacher = recipe.student is not None and (recipe.student.from_teacher is not None
                                                        or builds_from_teacher(recipe.student.model))
    if made_from_teacher and student is None:  # a cut, or a static student as built: judged at the end,
        models["cut"] = freeze(copy.deepcopy(models["student"]))  # untrained, in every family
    pipeline = Pipeline(recipe, device, splits, info, models, family)
    if not train:
        return pipeline
    check_stage_data(recipe, splits)
    check_init_from(recipe, models)
    check_teacher_preprocess(recipe, family, models, splits, info, device)  # its accuracy before / after preprocessing
    if "teacher" in models and not recipe.trains("teacher"):
        freeze(models["teacher"])
    sample = splits.test_set.x[:2].to(device)
    # the classes of the training data and of the test set (either may lack some by chance)
    num_classes = max(s.num_classes for s in (splits.pool_set, splits.test_set) if s is not None)
    pipeline.providers = build_providers(recipe, models, splits, device, sample, num_classes)
    pipeline.objectives = build_stage_objectives(recipe, models, sample, pipeline.providers, family.check_terms)
    family.check_cache(recipe, pipeline.objectives)
    return pipeline


def match_text_length(recipe: Recipe, models: dict) -> None:
    """A text run cuts every text at ``data.text.max_length`` tokens (its data does, for training
    and evaluation alike); its text encoders take that length too, so that their ``encode`` and the
    exported ``student_hf/`` cut texts where the run did. A model's ``args.max_length`` that says
    otherwise is refused: two lengths for one run would be a silent difference."""
    length = recipe.data.text_length()
    if length is None:
        return
    specs = {"teacher": recipe.teacher, "student": recipe.student,
             **{f"teachers.{name}": spec for name, spec in recipe.teachers.items()}}
    for role, spec in specs.items():
        given = spec.args.get("max_length") if spec is not None else None
        if given is not None and given != length:
            raise KDistillError(f"{role}.args.max_length: {given} differs from data.text.max_length ({length}), "
                                "the tokens this run keeps of each text (training, evaluation and the exported "
                                f"student_hf/ alike); drop {role}.args.max_length, or set data.text.max_length "
                                "to the length you want.")
    for model in models.values():
        set_max_length(model, length)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KDistillError(f"device: {shown(name)} asked for but CUDA is not available; use device=cpu or auto.")
    return torch.device(name)


def check_teacher_preprocess(recipe: Recipe, family: Family, models: dict, splits: Splits, info: dict,
                             device) -> None:
    """Judge a teacher this run does not train on up to 2,000 test inputs before and after the
    preprocessing, and print both: a drop shows inputs unlike those it was trained on. A teacher
    loaded from weights is also refused when it scores near chance on them, or far below the
    accuracy its weights record (``teacher_check``; ``data.check_teacher: false`` lets it go on).

    Adds ``teacher_accuracy: {samples, before, after}`` to ``info`` (prepare_data's data info)
    when the preprocessing changed the inputs; nothing is judged when there is no teacher, the
    run trains it, or the family's models output no classes (``Family.outputs_classes``).
    """
    before = splits.test_before_preprocess
    judged = loaded_teacher(recipe) and recipe.data.check_teacher
    if ((before is None and not judged) or "teacher" not in models or not family.outputs_classes
            or recipe.trains("teacher")):
        return
    teacher = main_teacher(models["teacher"])
    test = splits.test_set
    rows = before.index if before is not None else torch.linspace(
        0, len(test) - 1, min(TEACHER_CHECK_SAMPLES, len(test))).long().unique()
    labels = test.y[rows]
    try:
        hits = [predict(teacher, x, device).argmax(1).cpu() == labels
                for x in (*([before] if before is not None else []), test.x.subset(rows))]
    except (RuntimeError, ValueError, TypeError, IndexError):  # inputs the model refuses: the dry pass says so
        return
    if before is not None:
        accuracy = [h.float().mean().item() for h in hits]
        info["teacher_accuracy"] = {"samples": len(before), "before": accuracy[0], "after": accuracy[1]}
        if distributed.is_main():
            print(f"teacher accuracy on {len(before)} test inputs: {accuracy[0]:.4f} before preprocessing, "
                  f"{accuracy[1]:.4f} after (data.normalize: {info.get('normalize')})", file=sys.stderr, flush=True)
    if judged and len(labels) and int(labels.min()) >= 0:
        judge_teacher(int(hits[-1].sum()), labels, recorded_accuracy(recipe.teacher.weights)
                      if recipe.teacher.weights else None)


def loaded_teacher(recipe: Recipe) -> bool:
    """Whether the recipe's teacher is read from trained weights (``weights``, or a pretrained
    model's folder, ``args.path``) rather than built at random."""
    teacher = recipe.teacher
    return teacher is not None and bool(teacher.weights or teacher.args.get("path"))


CALIBRATION = 32  # training inputs a cut ranked on data reads


def calibration_batch(splits: Splits, device) -> torch.Tensor:
    """The first ``CALIBRATION`` training inputs (evenly spread over the pool), on ``device``."""
    pool = splits.pool_set.x
    rows = torch.linspace(0, len(pool) - 1, min(len(pool), CALIBRATION)).long().unique()
    return pool.batch(rows, device)


def data_model_args(family: Family, splits: Splits) -> dict:
    """What the data says of the models that fit it: ``in_channels`` and ``image_size``
    (``[height, width]``) of images, ``in_features`` (the flattened input size) and what the family adds (``Family.model_args``: ``num_classes``
    of a classifier); a registered model the recipe builds without weights takes those its
    arguments leave out."""
    test = splits.test_set
    if test is None or not len(test) or test.source.tokens:
        return {}
    shape = tuple(test.x.shape[1:])  # one sample, fetched
    known = {"in_features": int(torch.Size(shape).numel())}
    if len(shape) == 3:  # (C, H, W)
        known["in_channels"], known["image_size"] = shape[0], [shape[1], shape[2]]
    return {**known, **family.model_args(splits)}


def _build(spec, known: dict, teacher: nn.Module | None = None) -> nn.Module:
    """The recipe's model ``spec``, fitted to the data where its args are silent (not when it
    loads weights, whose shapes decide); ``teacher``: passed to a builder made from it."""
    args = spec.args if spec.weights else with_data_defaults(spec.model, spec.args, **known)
    return build_model(spec.model, **{**args, **({"teacher": teacher} if teacher is not None else {})})


def build_models(recipe: Recipe, teacher: nn.Module | None, student: nn.Module | None, device,
                 known: dict | None = None, calibration=None) -> dict:
    """Teacher (frozen unless a stage trains it), student and, if a stage trains one, the baseline:
    the same student architecture from the same initial weights, trained without distillation.
    A student ``from_teacher`` is cut from the teacher once the teacher holds its weights, and a
    student whose builder takes ``teacher`` (``zoo.builds_from_teacher``: a static-embedding
    student) is built from it then. ``known``: the data's ``data_model_args``; ``calibration()``: a
    batch of training inputs on the teacher's device, for a cut ranked on data."""
    torch.manual_seed(recipe.seed)
    known = known or {}
    models: dict[str, nn.Module] = {}
    subnet = recipe.student.from_teacher if student is None and recipe.student is not None else None
    made_from_teacher = student is None and recipe.student is not None and builds_from_teacher(recipe.student.model)
    if student is None and recipe.student is not None and subnet is None and not made_from_teacher:
        student = _build(recipe.student, known)
    if recipe.teacher is not None or teacher is not None:
        if teacher is None:
            teacher = _build(recipe.teacher, known)
        if recipe.teacher is not None and recipe.teacher.weights:
            load_weights(teacher, recipe.teacher.weights, "teacher")
        if subnet is not None:
            student = cut_student(teacher.to(device), subnet, calibration)
        elif made_from_teacher:
            student = _build(recipe.student, known, teacher.to(device))
        if recipe.teachers:
            extras = {}
            for name, spec in recipe.teachers.items():
                extras[name] = _build(spec, known)
                if spec.weights:
                    load_weights(extras[name], spec.weights, f"teachers.{name}")
            teacher = TeacherEnsemble(teacher, extras)
        models["teacher"] = teacher
    if made_from_teacher and student is None:  # no teacher: its builder says what it needs
        student = _build(recipe.student, known)
    if student is not None:
        if recipe.student is not None and recipe.student.weights:
            load_weights(student, recipe.student.weights, "student")
        models["student"] = student
    elif recipe.trains("student") or recipe.trains("baseline"):
        raise KDistillError("student: a stage trains the student but the recipe names none; add a "
                            "'student' section (model, args) or pass student= from Python.")
    if recipe.trains("baseline"):
        models["baseline"] = copy.deepcopy(student)
    return {k: m.to(device) for k, m in models.items()}


def cut_student(teacher: nn.Module, spec, calibration=None) -> nn.Module:
    """The sub-network of ``teacher`` a recipe's ``student.from_teacher`` describes. A model with
    its own ``cut(spec, calib)`` (a causal language model) cuts itself, ranking what it keeps on
    ``calibration()``, a batch of training inputs."""
    if hasattr(teacher, "cut"):
        return teacher.cut(spec, calibration() if calibration is not None else None)
    if spec.pick == "block":
        raise KDistillError("student.from_teacher.pick: block (a contiguous block of layers dropped, ranked on "
                            "data) applies to causal language models (model: hf_causal); use even, first_last or first.")
    keep = spec.keep
    if spec.layers is not None:
        stack = getattr(teacher, "layer_stack", None)
        if stack is None:
            raise KDistillError("student.from_teacher.layers: needs a transformer teacher (model: hf, or hf_vision "
                                "of a family with one stack of layers, such as ViT); "
                                "for other models name the blocks, e.g. keep: {stages.1: [0]}.")
        keep = pick_layers(len(resolve_module(teacher, stack)), spec.layers, spec.pick)
    return sub_network(teacher, keep, heads=spec.heads, ffn=spec.ffn)


def check_init_from(recipe: Recipe, models: dict) -> None:
    """A stage that starts from another stage's end trains a model of the same shape."""
    trained = {s.name: s.train for s in recipe.stages}
    for i, stage in enumerate(recipe.stages):
        if not stage.init_from:
            continue
        source = trained[stage.init_from]
        a, b = models[stage.train].state_dict(), models[source].state_dict()
        if {k: tuple(v.shape) for k, v in a.items()} != {k: tuple(v.shape) for k, v in b.items()}:
            raise KDistillError(f"stages.{i}.init_from: stage {shown(stage.init_from)} trains the {source}, whose weights "
                                f"do not fit the {stage.train} this stage trains; start from a stage that trains "
                                f"the {stage.train} (or one of the same architecture).")
