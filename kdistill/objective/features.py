"""Feature providers: features a loss can read that are not a module's output, such as a
teacher layer projected to a low-dimensional space or the student's distances to learnable
class prototypes.

A provider names its features, says which tap each is computed from and by which module, and
prepares its state before each stage (fitting a projection, starting prototypes). The
objectives own the providers whose features their terms read; the training loop and the runner
call only ``Objective.prepare`` and know no feature by name. A new provider is one module with a
``FeatureProvider`` subclass and a line in ``objective.build.PROVIDERS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kdistill.errors import KDistillError, shown


@dataclass
class StageContext:
    """What a stage's objective may read while it is prepared.

    Args:
        model: the model the stage trains.
        models: every model of the run by role (``teacher``, ``student``, ``baseline``).
        splits: the run's data splits.
        device: where the models are.
        initial: the trained model's weights when the run started (by parameter name).
        ends: the weights each earlier stage ended with, by stage name.
        stage_start: the weights this stage starts from.
        teacher_changed: a stage trained the teacher since the providers were last refitted.
        seed: the run's seed.
    """

    model: nn.Module
    models: dict
    splits: object
    device: torch.device
    initial: dict = field(default_factory=dict)
    ends: dict = field(default_factory=dict)
    stage_start: dict | None = None
    teacher_changed: bool = False
    seed: int = 0

    def start_weights(self, start: str, term: str) -> dict[str, torch.Tensor]:
        """The weights ``start`` names: ``init``, ``stage`` or an earlier stage's name."""
        if start == "stage":
            return self.stage_start if self.stage_start is not None else {
                n: p.detach().clone() for n, p in self.model.state_dict().items()}
        if start == "init":
            return self.initial
        if start in self.ends:
            return self.ends[start]
        raise KDistillError(f"loss {shown(term)}: start {shown(start)} is not init, stage or an earlier stage ({list(self.ends)}).")


class FeatureProvider(nn.Module):
    """Named features computed from taps. Subclasses fill ``student_features`` and
    ``teacher_features`` ({name: (source tap, module)}) and may override the hooks below."""

    def student_features(self) -> dict[str, tuple[str, nn.Module]]:
        return {}

    def teacher_features(self) -> dict[str, tuple[str, nn.Module]]:
        return {}

    def adapters(self) -> dict[str, nn.Module]:
        """Adapters (keyed by ``models.adapters.adapter_key``) the objectives should share with it."""
        return {}

    def prepare(self, context: StageContext, reads: set[str]) -> bool:
        """Before a stage whose terms read ``reads``; returns whether teacher-side state was refitted."""
        return False

    def summary(self, context: StageContext) -> dict:
        """Entries for the run's summary after training (``{}``: none)."""
        return {}

    def files(self) -> dict[str, nn.Module]:
        """Modules saved beside the run's weights, by file stem."""
        return {}
