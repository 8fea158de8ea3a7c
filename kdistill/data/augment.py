"""Batched image augmentation on tensors (runs on the batch's device).

An augmentation is drawn as explicit parameters first, then applied, so that a cached
teacher output can be stored with the parameters of the view it was computed on and the
student shown exactly that view. ``Augment`` is a stage's augmentation of its batches: a
random shift/flip, or (with a disk cache of augmented views) one of each sample's cached views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_shift_flip(n: int, shift: int = 2, flip: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Parameters of ``n`` random views: ``(n, 3)`` int16 rows ``(dy, dx, flipped)``, offsets in
    ``[0, 2 * shift]`` (``shift`` means no translation)."""
    params = torch.zeros(n, 3, dtype=torch.int16)
    params[:, :2] = shift
    if shift:
        params[:, 0] = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(torch.int16)
        params[:, 1] = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(torch.int16)
    if flip:
        params[:, 2] = (torch.rand(n, generator=generator) < 0.5).to(torch.int16)
    return params


def shift_flip(x: torch.Tensor, params: torch.Tensor, shift: int) -> torch.Tensor:
    """Apply views drawn by ``draw_shift_flip``: translate each image by ``(shift - dy, shift -
    dx)`` pixels (output pixel ``(i, j)`` is input pixel ``(i + dy - shift, j + dx - shift)``,
    zero outside) and flip it horizontally where ``flipped``.

    Args:
        x: images ``(B, C, H, W)``; params: ``(B, 3)``.
    Returns:
        the views, same shape as ``x``.
    """
    B, C, H, W = x.shape
    params = params.to(x.device).long()
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))  # (B, C, H+2s, W+2s)
        rows = (params[:, 0, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (params[:, 1, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B,1,1,W)
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        chan = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]  # (B, C, H, W)
    flipped = params[:, 2].bool()
    if flipped.any():
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    return x


def random_shift_flip(
    x: torch.Tensor, shift: int = 2, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels (zero padded) and flip half of them.

    Args:
        x: images ``(B, C, H, W)``.
    Returns:
        augmented images, same shape.
    """
    return shift_flip(x, draw_shift_flip(len(x), shift, flip, generator), shift)


class Augment:
    """The view of each batch that the student trains on (and a disk cache's teacher saw).

    Args:
        shift, flip: the stage's augmentation (``AugmentSpec``): random translation by up to
            ``shift`` pixels, random horizontal flip; neither: the batch as it is.
        views: the parameters of a disk cache's views of every sample, ``(N, V, 3)``
            (``TeacherCache.params``), or None. With them, an augmented batch is one of its
            samples' cached views, drawn per sample, instead of a new random one.
    """

    def __init__(self, shift: int = 0, flip: bool = False, views: torch.Tensor | None = None):
        self.shift, self.flip, self.views = int(shift), bool(flip), views

    @property
    def random(self) -> bool:
        """Whether the batches are augmented at random (a shift or a flip)."""
        return bool(self.shift or self.flip)

    def __call__(self, x: torch.Tensor, index: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch ``x (B, C, H, W)`` of samples ``index (B,)`` as the student sees it, and the
        cached view it is ``(B,)`` (None without cached views). Draws from ``generator``: a
        cached view per sample, or the random shift and flip (``draw_shift_flip``)."""
        if not self.random:
            return x, None
        if self.views is not None:  # one of the cached views, the teacher's own
            view = torch.randint(self.views.shape[1], (len(index),), generator=generator)  # (B,)
            return shift_flip(x, self.views[index, view], self.shift), view
        return random_shift_flip(x, self.shift, self.flip, generator), None
