"""Each stage's objective built from the recipe: its terms, the features they read (taps and
providers), and the adapters between student and teacher features, checked by one dry forward
pass before any training."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.errors import KDistillError, shown
from kdistill.models.adapters import adapter_key, build_adapters
from kdistill.models.infer import dry_features
from kdistill.models.taps import HEAD, OUTPUT
from kdistill.objective.core import Objective, build_objective
from kdistill.objective.features import FeatureProvider
from kdistill.objective.projected import ProjectedTeacher
from kdistill.objective.shallow import ShallowSpace

# every feature provider: ``from_recipe(recipe, models, splits, device, sample, num_classes)``
# gives the provider, or None when the recipe does not ask for its features
PROVIDERS = (ShallowSpace.from_recipe, ProjectedTeacher.from_recipe)


def build_providers(recipe, models: dict, splits, device, sample: torch.Tensor,
                    num_classes: int) -> list[FeatureProvider]:
    """The feature providers the recipe asks for, fitted and built before any stage."""
    found = (make(recipe, models, splits, device, sample, num_classes) for make in PROVIDERS)
    return [p for p in found if p is not None]


def build_stage_objectives(recipe, models: dict, sample: torch.Tensor, providers: list[FeatureProvider] = (),
                           check_terms=None) -> dict[str, Objective]:
    """One objective per stage, with taps checked and adapters built from one dry forward pass.

    Runs before any training, so a bad tap name fails early. Adapters are shared across stages
    by (student tap, teacher tap), and with the providers' own adapters. ``check_terms(objective,
    s_feats, t_feats)``: refuses terms whose outputs cannot be compared (the family's rule;
    default ``check_outputs_match``).
    """
    shared = nn.ModuleDict()
    for provider in providers:
        shared.update(provider.adapters())
    objectives = {}
    for stage in recipe.stages:
        objective = build_objective([t.model_dump() for t in stage.loss])
        objective.use_providers(list(providers))
        s_names, t_names = objective.taps()
        s_feats = dry_features(models[stage.train], s_names, "student", sample, objective.student_derived)
        if objective.uses_teacher and stage.train != "teacher":
            t_feats = dry_features(models["teacher"], t_names, "teacher", sample, objective.teacher_derived)
            (check_terms or check_outputs_match)(objective, s_feats, t_feats)
            pairs = objective.feature_pairs()
            for key, adapter in build_adapters(pairs, s_feats, t_feats).items():
                if key not in shared:
                    shared[key] = adapter.to(sample.device)
            objective.adapters = nn.ModuleDict({adapter_key(s, t): shared[adapter_key(s, t)] for s, t in pairs})
        objectives[stage.name] = objective.to(sample.device)
    return objectives


def output_mismatches(objective: Objective, s_feats: dict, t_feats: dict):
    """``(term name, tap, who, student width, teacher width)`` of each term comparing a student's
    output with a teacher's of another width: ``tap`` is ``HEAD`` (the output projections: a
    vocabulary) or ``OUTPUT`` (classes, or embeddings); ``who``: which teacher."""
    for term in objective.terms:
        students = term.student if isinstance(term.student, tuple) else (term.student,)
        teachers = term.teacher if isinstance(term.teacher, tuple) else (term.teacher,)
        if HEAD in students and HEAD in teachers:
            vs, vt = s_feats[HEAD][0].shape[0], t_feats[HEAD][0].shape[0]
            if vs != vt:
                yield term.name, HEAD, "teacher", vs, vt
            continue
        if OUTPUT not in students:
            continue
        for t in teachers:
            if t is None or t.split(":")[-1] != OUTPUT:
                continue
            ks, kt = s_feats[OUTPUT].shape[-1], t_feats[t].shape[-1]
            if ks != kt:
                yield term.name, OUTPUT, "teacher" if t == OUTPUT else f"teacher {shown(t.split(':')[0])}", ks, kt


def widths_differ(term: str, tap: str, who: str, ours: int, theirs: int) -> str:
    """The words for a term whose student output is ``ours`` wide and the teacher's ``theirs``
    (a family whose outputs are not classes says its own)."""
    if tap == HEAD:
        return (f"loss {shown(term)}: the teacher predicts over {theirs} tokens but the student over {ours}; token "
                "losses need one vocabulary: give the student the teacher's tokenizer (a sub-network of the "
                "teacher, or a config with its vocab_size).")
    return (f"loss {shown(term)}: the {who} outputs {theirs} classes but the student {ours}; give the student "
            f"num_classes={theirs} (model args).")


def check_outputs_match(objective: Objective, s_feats: dict, t_feats: dict, differ=widths_differ) -> None:
    """A term comparing the student's output with a teacher's needs the same classes (or, through
    output projections, the same vocabulary) on both sides; ``differ`` words the refusal."""
    for mismatch in output_mismatches(objective, s_feats, t_feats):
        raise KDistillError(differ(*mismatch))
