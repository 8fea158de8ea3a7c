"""The layout of a language-model batch, which the text sources write and the causal LM, the token
losses and the LM evaluation read: token ids ``(B, L)``, or ``(B, 2, L)`` of ids and attention
mask, or ``(B, 3, L)`` of ids, attention mask and loss mask (the positions that are targets).
"""

from __future__ import annotations

import torch

from kdistill.errors import KDistillError


def split_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, L)`` and attention mask ``(B, L)`` of ``x`` ``(B, 3, L)``, ``(B, 2, L)`` or ``(B, L)``."""
    if x.dim() == 2:
        return x.long(), torch.ones_like(x, dtype=torch.long)
    if x.dim() == 3 and x.shape[1] in (2, 3):
        return x[:, 0].long(), x[:, 1].long()
    raise KDistillError(f"model 'hf_causal': inputs of shape {tuple(x.shape)}; give token ids (B, L) or a packed "
                        "batch (B, 3, L) of ids, attention mask and loss mask.")


def prediction_mask(x: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool: the positions whose next-token prediction counts, i.e. t where token t+1 is a
    target (the loss mask of ``(B, 3, L)``, else the attention mask); never the last position."""
    ids, attention = split_inputs(x)
    target = x[:, 2] if x.dim() == 3 and x.shape[1] == 3 else attention
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, :-1] = target[:, 1:].bool()
    return mask
