"""The teacher's embeddings in a static student's space: the teacher feature ``projected``.

A static-embedding student (``models.static``) narrower than its teacher lives in a PCA of the
teacher's space, fitted on the teacher's token vectors when the student was built. The same
fixed map, the student's ``teacher_projection``, takes the teacher's sentence embeddings into
the student's space (``(t - mean) @ components``, L2 normalised): a loss term with
``teacher: projected`` compares the student with them at the student's width, with no adapter
(the shapes match) and nothing trained on the teacher's side, so that cosine means what it says
at width 64 or 256. A term that reads the teacher's own output instead is refused at a narrower
width (the widths differ); at the teacher's width there is no PCA and both are the same.
"""

from __future__ import annotations

import torch

from kdistill.closeness import mean_cosine
from kdistill.models.ensemble import main_teacher
from kdistill.models.infer import predict
from kdistill.models.static import StaticEncoder
from kdistill.models.taps import OUTPUT
from kdistill.objective.features import FeatureProvider, StageContext

PROJECTED = "projected"


class ProjectedTeacher(FeatureProvider):
    """The teacher feature ``projected``: the teacher's output through ``projection``, the fixed
    map a static student was built with (its buffers are the student's; nothing here trains)."""

    def __init__(self, projection: torch.nn.Module):
        super().__init__()
        self.projection = projection

    @classmethod
    def from_recipe(cls, recipe, models: dict, splits, device, sample: torch.Tensor, num_classes: int):
        student = models.get("student")
        return cls(student.teacher_projection) if isinstance(student, StaticEncoder) else None

    def teacher_features(self):
        return {PROJECTED: (OUTPUT, self.projection)}

    @torch.no_grad()
    def summary(self, context: StageContext) -> dict:
        """Cosine between each static model (as built, student, baseline) and the projected teacher on the
        test set: ``{"projected": {role: {"mean_cosine": float}}}``."""
        models, test, device = context.models, context.splits.test_set, context.device
        if "teacher" not in models:
            return {}
        teacher = self.projection(predict(main_teacher(models["teacher"]), test.x, device, 256).to(device)).cpu()
        result = {role: {"mean_cosine": mean_cosine(predict(models[role], test.x, device, 256), teacher)}
                  for role in ("cut", "student", "baseline") if isinstance(models.get(role), StaticEncoder)}
        return {PROJECTED: result}
