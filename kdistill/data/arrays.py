"""A data source held in memory: a user's tensors or numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdistill.errors import KDistillError


@dataclass
class ArraySource:
    """Inputs and labels in memory.

    Args:
        x: inputs, ``(N, ...)``; images as ``(N, C, H, W)`` (uint8 becomes float), token ids
            as int64 ``(N, 2, L)`` (ids and attention mask, for the HF encoders).
        y: integer class labels ``(N,)``; ``-1`` marks an unlabelled sample.
        num_classes: number of classes (default: ``max(y) + 1``).
        divided_by: the fixed division already applied to the raw inputs (255 for kdistill's
            IDX loader, 16 for its digits; 1: the inputs as they came).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int = 0
    divided_by: float = 1.0

    def __post_init__(self):
        self.x = torch.as_tensor(np.asarray(self.x) if not torch.is_tensor(self.x) else self.x)
        self.y = torch.as_tensor(np.asarray(self.y) if not torch.is_tensor(self.y) else self.y)
        if self.x.dtype in (torch.uint8, torch.int8, torch.bool):  # pixels; int32/int64 (token ids) stay
            self.x = self.x.float()
        self.y = self.y.long()
        if len(self.x) != len(self.y):
            raise KDistillError(
                f"data: {len(self.x)} inputs but {len(self.y)} labels; give one label per input."
            )
        if not self.num_classes:
            self.num_classes = int(self.y.max()) + 1 if len(self.y) else 0

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ArraySource":
        return ArraySource(self.x[index], self.y[index], self.num_classes, self.divided_by)
