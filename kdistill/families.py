"""Model families: how a kind of model is judged while it trains, judged at the end, and
exported beside the run, behind one small interface.

``classify``: models output class logits; they are judged by accuracy, calibration and
agreement with the teacher. ``embed``: sentence encoders output embeddings; they are judged by
closeness to the teacher, few-label accuracy and speed, and a transformers encoder is also
written as a sentence-transformers folder. A new family (a causal language model, say) is a
``Family`` subclass here and a line in ``FAMILIES``; the recipe's ``task`` names it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdistill.evaluate.embedding import evaluate_embedders, mean_cosine
from kdistill.evaluate.metrics import evaluate_model, predict
from kdistill.export.text_encoder import export_sentence_transformer
from kdistill.models.ensemble import main_teacher
from kdistill.models.hf import HFEncoder


class Family:
    """The interface every family fills."""

    def epoch_metrics(self, model: nn.Module, teacher: nn.Module | None, eval_set, device) -> tuple[dict, str]:
        """Metrics of the model being trained on the validation (or test) set after an epoch, and
        the words for the progress line. ``teacher``: the frozen teacher, None while it trains."""
        metrics = evaluate_model(model, eval_set.x, eval_set.y, device, latency=False)
        return {k: v for k, v in metrics.items() if k != "params"}, f"acc {metrics['accuracy']:.4f}"

    def final_metrics(self, recipe, models: dict, splits, device, outputs: dict | None = None) -> dict:
        """``{"test": {role: metrics}}`` of every model on the test set; ``outputs`` is filled
        with what the report draws from (each classifier's test logits)."""
        raise NotImplementedError

    def export(self, student: nn.Module, folder: Path) -> None:
        """Write what this family's users load besides the weights into the run's ``folder``."""


class Classifier(Family):
    """Class logits: accuracy, ECE, agreement and KL with the teacher, latency."""

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        test = splits.test_set
        teacher_logits = predict(main_teacher(models["teacher"]), test.x, device) if "teacher" in models else None
        results = {}
        for role in ("teacher", "baseline", "student"):
            # a student no stage trained is not reported (a run that only trains a teacher)
            if role in models and (role != "student" or recipe.trains("student")):
                against = teacher_logits if role != "teacher" else None
                model = main_teacher(models[role]) if role == "teacher" else models[role]
                logits = teacher_logits if role == "teacher" else predict(model, test.x, device)
                results[role] = evaluate_model(model, test.x, test.y, device, against, recipe.latency, logits)
                if outputs is not None:
                    outputs[role] = logits
        if "teacher" in results and "student" in results:
            results["student"]["params_ratio"] = results["teacher"]["params"] / results["student"]["params"]
        return {"test": results}


class Encoder(Family):
    """Sentence embeddings: cosine to the teacher, neighbour overlap, few-label accuracy, speed."""

    def epoch_metrics(self, model, teacher, eval_set, device):
        if teacher is None:  # the teacher itself trains: judged as a classifier
            return super().epoch_metrics(model, teacher, eval_set, device)
        cosine = mean_cosine(predict(model, eval_set.x, device, 256),
                             predict(main_teacher(teacher), eval_set.x, device, 256))
        return {"mean_cosine": cosine}, f"cosine to teacher {cosine:.4f}"

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        judged = {role: main_teacher(models["teacher"]) if role == "teacher" else m for role, m in models.items()
                  if role != "student" or recipe.trains("student")}
        shots = tuple(recipe.embedding.shots) if recipe.embedding else (1, 5, 10, 50)
        return {"test": evaluate_embedders(judged, splits.pool_set.x, splits.pool_labels, splits.test_set.x,
                                           splits.test_set.y, device, shots, recipe.seed)}

    def export(self, student, folder):
        if isinstance(student, HFEncoder) and not getattr(student, "pruned_heads", None):
            # a folder transformers.AutoModel and sentence_transformers.SentenceTransformer load as it is
            export_sentence_transformer(student, folder / "student_hf", overwrite=True)  # a resumed run's too


FAMILIES: dict[str, Family] = {"classify": Classifier(), "embed": Encoder()}


def family_of(recipe) -> Family:
    return FAMILIES[recipe.task]

