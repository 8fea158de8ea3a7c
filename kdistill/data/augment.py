"""Batched image augmentation on tensors (runs on the batch's device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift_flip(
    x: torch.Tensor, shift: int = 2, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels (zero padded) and flip half of them.

    Args:
        x: images ``(B, C, H, W)``.
    Returns:
        augmented images, same shape.
    """
    B, C, H, W = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))  # (B, C, H+2s, W+2s)
        dy = torch.randint(0, 2 * shift + 1, (B,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (B,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B,1,1,W)
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        chan = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]  # (B, C, H, W)
    if flip:
        mask = torch.rand(B, generator=generator).to(x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x
