"""Several frozen teachers run as one: the main teacher plus named extra teachers.

Taps keep their plain names on the main teacher (``stages.2``, ``logits``); ``name:path`` reads
module ``path`` of the extra teacher ``name`` and ``name:logits`` its output. No teacher is
edited: the ensemble holds them side by side and runs each on the same input.
"""

from __future__ import annotations

import torch
from torch import nn


def main_teacher(teacher: nn.Module) -> nn.Module:
    """The teacher itself, or with extra teachers (a ``TeacherEnsemble``) the main one."""
    return teacher.main if isinstance(teacher, TeacherEnsemble) else teacher


class TeacherEnsemble(nn.Module):
    """Runs the main teacher and every extra teacher on the same input; returns the main output."""

    def __init__(self, main: nn.Module, extras: dict[str, nn.Module]):
        super().__init__()
        self.main = main
        self.extras = nn.ModuleDict(extras)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for extra in self.extras.values():
            extra(x)  # their outputs are read by taps on "extras.<name>"
        return self.main(x)

    def tap_path(self, name: str) -> str:
        """The module path inside the ensemble of a tap name (``path`` or ``teacher:path``)."""
        teacher, sep, path = name.rpartition(":")
        if not sep:
            return f"main.{name}"
        return f"extras.{teacher}" if path == "logits" else f"extras.{teacher}.{path}"
