"""A training batch: which samples, their inputs, their labels, and which labels count."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdistill.data.splits import UNLABELLED


@dataclass
class Batch:
    """Samples ``index`` of a stage's data.

    Args:
        index: the samples' positions in the stage's data ``(B,)`` (for teacher outputs cached
            by sample and losses that keep a memory of samples).
        x: the inputs ``(B, ...)``; y: the labels ``(B,)``, ``-1`` where withheld.
    ``mask``: which labels count ``(B,)`` bool (False: unlabelled), computed when read; padding
    masks of token inputs travel inside ``x`` today and belong here when inputs are streamed.
    """

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.y != UNLABELLED

    @classmethod
    def fetched(cls, index: torch.Tensor, raw: torch.Tensor, y: torch.Tensor, device, inputs) -> "Batch":
        """Fetched samples ``index`` with stored inputs ``raw`` and labels ``y``, moved to
        ``device`` and made ready for the models there by ``inputs`` (their ``Inputs``); the
        index stays where it is."""
        x = inputs.ready(raw.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        return cls(index, x, y)
