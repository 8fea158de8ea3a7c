"""Model families: how a kind of model is judged while it trains, judged at the end, and
exported beside the run, behind one small interface.

``classify``: models output class logits; they are judged by accuracy, calibration and
agreement with the teacher. ``generate``: causal language models, judged by perplexity,
agreement with the teacher and generation speed, and written as a transformers folder. ``embed``: sentence encoders output embeddings; they are judged by
closeness to the teacher, few-label accuracy and speed, and a transformers encoder is also
written as a sentence-transformers folder (a static-embedding student as a folder model2vec and
sentence-transformers load). A family also owns the rules of its kind: the data it needs
(``check_data``), what the data tells its models (``model_args``), how a term's outputs must fit
(``check_terms``) and what a teacher cache may keep (``check_cache``). A new family is a
``Family`` subclass (here or in the user's own module) and one line, ``FAMILIES["name"] =
MyFamily()``; the recipe's ``task`` names it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdistill.data import UNLABELLED
from kdistill.errors import KDistillError, shown
from kdistill.closeness import mean_cosine, neighbour_overlap
from kdistill.evaluate.embedding import evaluate_embedders
from kdistill.evaluate.metrics import evaluate_model
from kdistill.models.ensemble import main_teacher
from kdistill.evaluate.lm import continuations, generation_speeds, prompts_from, token_metrics
from kdistill.models.infer import predict
from kdistill.models.taps import HEAD, OUTPUT
from kdistill.models.zoo import count_params
from kdistill.objective.build import check_outputs_match, widths_differ


ROLES = ("teacher", "cut", "baseline", "student")  # the order the models are judged and reported in


class Family:
    """The interface every family fills."""

    # why a data source that does not serve the family (recipe/sources.py: its tasks) cannot be
    # read by its models, or read only by them; {sources}: those that serve it. None: the recipe's
    # check says which tasks the source serves
    data_rule: str | None = None

    outputs_classes = False  # its models output class logits: the teacher's accuracy is judged, class names exported

    def check_data(self, splits) -> None:
        """Refuse, before any model is built, data this family cannot judge its models on."""

    def model_args(self, splits) -> dict:
        """What the data tells this family's models besides its inputs' shape (``num_classes``,
        say): a registered model built without weights takes those its arguments leave out."""
        return {}

    def check_terms(self, objective, s_feats: dict, t_feats: dict) -> None:
        """Refuse a stage's terms whose student and teacher outputs (``s_feats``, ``t_feats``: one
        dry forward pass's features) cannot be compared."""
        check_outputs_match(objective, s_feats, t_feats, self.widths_differ)

    widths_differ = staticmethod(widths_differ)  # the words for a term's outputs of two widths

    def check_cache(self, recipe, objectives: dict) -> None:
        """Refuse, before training, a stage's teacher cache (``cache:``) that cannot hold what its
        ``objectives`` (by stage name) read of the teacher."""

    def check_models(self, models: dict) -> None:
        """Refuse, before any data reaches them, models that cannot be judged together."""

    def epoch_metrics(self, model: nn.Module, teacher: nn.Module | None, eval_set, device) -> tuple[dict, str]:
        """Metrics of the model being trained on the validation (or test) set after an epoch, and
        the words for the progress line. ``teacher``: the frozen teacher, None while it trains."""
        metrics = evaluate_model(model, eval_set.x, eval_set.y, device, latency=False)
        return {k: v for k, v in metrics.items() if k != "params"}, f"acc {metrics['accuracy']:.4f}"

    def selection_score(self, metrics: dict) -> float:
        """How good ``epoch_metrics``' metrics are, higher better: a stage with ``keep_best`` ends on
        the weights of its best epoch by this score."""
        return metrics["accuracy"]

    def final_metrics(self, recipe, models: dict, splits, device, outputs: dict | None = None) -> dict:
        """``{"test": {role: metrics}}`` of every model on the test set; ``outputs`` is filled
        with what the report draws from (each classifier's test logits). Each pass over the test
        set is named, for its bar where the job shows progress (``kdistill.progress``)."""
        raise NotImplementedError

    @staticmethod
    def judged(recipe, models: dict) -> list[str]:
        """The roles judged at the end, in ``ROLES`` order; a student no stage trained is not
        (a run that only trains a teacher)."""
        return [role for role in ROLES if role in models and (role != "student" or recipe.trains("student"))]

    def export(self, student: nn.Module, folder: Path) -> None:
        """Write what this family's users load besides the weights into the run's ``folder``: what
        the student writes of itself, when it has an ``export(folder)`` (a transformers encoder its
        ``student_hf/``, a static-embedding student its ``student_static/``, a causal language
        model its ``student_hf/``)."""
        if callable(getattr(student, "export", None)):
            student.export(folder)


class Classifier(Family):
    """Class logits: accuracy, ECE, agreement and KL with the teacher, latency."""

    outputs_classes = True

    def check_data(self, splits):
        """The test set is scored by its labels, so it needs them all."""
        test = splits.test_set
        unlabelled = int((test.y == UNLABELLED).sum())
        if unlabelled:
            raise KDistillError(f"data: {unlabelled} of the {len(test)} test labels are -1 (unlabelled), but a classify "
                                "run scores the test set by its labels; label them, or move them into the training set.")

    def model_args(self, splits):
        return {"num_classes": max(s.num_classes for s in (splits.pool_set, splits.test_set) if s is not None)}

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        test = splits.test_set
        teacher_logits = (predict(main_teacher(models["teacher"]), test.x, device, desc="teacher: test set")
                          if "teacher" in models else None)
        results = {}
        for role in self.judged(recipe, models):
            against = teacher_logits if role != "teacher" else None
            model = main_teacher(models[role]) if role == "teacher" else models[role]
            logits = (teacher_logits if role == "teacher" else
                      predict(model, test.x, device, desc=f"{role}: test set"))
            results[role] = evaluate_model(model, test.x, test.y, device, against, recipe.latency, logits)
            if outputs is not None:
                outputs[role] = logits
        if "teacher" in results and "student" in results:
            results["student"]["params_ratio"] = results["teacher"]["params"] / results["student"]["params"]
        return {"test": results}


class Encoder(Family):
    """Sentence embeddings: cosine to the teacher, neighbour overlap, few-label accuracy, speed."""

    @staticmethod
    def widths_differ(term, tap, who, ours, theirs):
        if tap != OUTPUT:
            return widths_differ(term, tap, who, ours, theirs)
        return (f"loss {shown(term)}: the {who}'s embeddings are {theirs} wide but the student's {ours}; a narrower "
                "student reads a teacher feature of its width (teacher: projected, for a static student), or give "
                "the student the teacher's width.")

    def epoch_metrics(self, model, teacher, eval_set, device):
        if teacher is None:  # the teacher itself trains: judged as a classifier
            return super().epoch_metrics(model, teacher, eval_set, device)
        emb, target = predict(model, eval_set.x, device, 256), predict(main_teacher(teacher), eval_set.x, device, 256)
        if emb.shape[1] != target.shape[1] and len(emb) > 1:  # a narrower student: no cosine across widths
            k = min(10, len(emb) - 1)
            overlap = neighbour_overlap(emb, target, k)
            return {f"neighbour_overlap@{k}": overlap}, f"{k}-NN shared with teacher {overlap:.4f}"
        cosine = mean_cosine(emb, target)
        return {"mean_cosine": cosine}, f"cosine to teacher {cosine:.4f}"

    def selection_score(self, metrics):
        if "accuracy" in metrics:  # the teacher trained as a classifier
            return metrics["accuracy"]
        return next(v for k, v in metrics.items() if k == "mean_cosine" or k.startswith("neighbour_overlap"))

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        judged = {role: main_teacher(models["teacher"]) if role == "teacher" else models[role]
                  for role in self.judged(recipe, models)}
        shots = tuple(recipe.embedding.shots) if recipe.embedding else (1, 5, 10, 50)
        return {"test": evaluate_embedders(judged, splits.pool_set.x, splits.pool_labels, splits.test_set.x,
                                           splits.test_set.y, device, shots, recipe.seed)}


class LanguageModel(Family):
    """Causal language models: perplexity, agreement and token KL with the teacher, generation
    speed, sample continuations; the student written as a transformers folder."""

    data_rule = "causal language models (task: generate) read token sequences ({sources}), and only they do"
    EPOCH_SEQUENCES = 64  # held-out sequences judged after each epoch
    PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 3, 8, 24  # sample continuations in the report
    SPEED_TOKENS = 32  # tokens generated a prompt when timing

    def check_models(self, models):
        """Teacher and student share one tokenizer (token losses compare distributions over it)."""
        teacher, student = models.get("teacher"), models.get("student")
        vocab = [getattr(getattr(m, "tokenizer", None), "get_vocab", None) for m in (teacher, student)]
        if None in vocab or vocab[0]() == vocab[1]():
            return
        raise KDistillError(f"student: its tokenizer ({len(vocab[1]())} tokens) is not the teacher's "
                            f"({len(vocab[0]())} tokens); token distillation needs one vocabulary: cut the student "
                            "from the teacher (student.from_teacher), or build it with the teacher's tokenizer "
                            "(args.tokenizer: the teacher's folder).")

    def check_cache(self, recipe, objectives):
        """A disk cache's ``topk`` keeps the largest class logits: not the hidden states a
        causal language model's output projection turns into token logits."""
        for stage in recipe.stages:
            objective = objectives.get(stage.name)
            if (stage.cache is None or not stage.cache.topk or objective is None or not objective.uses_teacher
                    or stage.train == "teacher" or HEAD not in objective.taps()[1]):
                continue
            raise KDistillError(f"stages ({stage.name}): cache.topk keeps the largest class logits, but this teacher "
                                "outputs hidden states that its output projection turns into token logits as the loss "
                                "needs them (a causal language model); drop cache.topk (the hidden states are cached).")

    def epoch_metrics(self, model, teacher, eval_set, device):
        judge = main_teacher(teacher) if teacher is not None else None
        metrics = token_metrics(model, eval_set.x, device, judge, limit=self.EPOCH_SEQUENCES)
        agreement = f", agreement {metrics['agreement']:.4f}" if "agreement" in metrics else ""
        return {k: v for k, v in metrics.items() if k != "tokens"}, f"ppl {metrics['perplexity']:.3f}{agreement}"

    def selection_score(self, metrics):
        return -metrics["perplexity"]

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        test = splits.test_set.x
        teacher = main_teacher(models["teacher"]) if "teacher" in models else None
        prompts = prompts_from(test, self.PROMPTS, self.PROMPT_TOKENS)
        judged = {role: teacher if role == "teacher" else models[role] for role in self.judged(recipe, models)}
        results, samples = {}, {}
        for role, model in judged.items():
            metrics = token_metrics(model, test, device, None if role == "teacher" else teacher,
                                    desc=f"{role}: test set")
            metrics["params"] = count_params(model)
            samples[role] = continuations(model, prompts, self.NEW_TOKENS, device)
            results[role] = metrics
        if recipe.latency:  # the models timed in turn: a slow spell of the machine falls on all alike
            for batch in (1, 16):
                for role, speed in generation_speeds(judged, prompts, batch, self.SPEED_TOKENS, device).items():
                    results[role][f"tokens_per_s_b{batch}"] = speed
        base = results.get("teacher", {}).get("tokens_per_s_b16")
        for metrics in results.values():
            if base and "tokens_per_s_b16" in metrics:
                metrics["speedup_b16"] = metrics["tokens_per_s_b16"] / base
        return {"test": results, "samples": samples}


FAMILIES: dict[str, Family] = {"classify": Classifier(), "embed": Encoder(), "generate": LanguageModel()}


def family_of(recipe) -> Family:
    """The family the recipe's ``task`` names."""
    family = FAMILIES.get(recipe.task)
    if family is None:
        raise KDistillError(f"task: {shown(recipe.task)} is not a model family; use one of {', '.join(FAMILIES)}.")
    return family

