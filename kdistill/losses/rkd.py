"""Relational Knowledge Distillation (Park, Kim, Lu and Cho, CVPR 2019, arXiv:1904.05068)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.losses.registry import Contract, register


def normalised_distances(x: torch.Tensor) -> torch.Tensor:
    """``psi_D(i, j) = ||x_i - x_j||_2 / mu`` over the ordered pairs i != j: ``(B, D) -> (B * (B - 1),)``.

    ``mu`` is the mean distance over those pairs.
    """
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    dist = (x[None, :] - x[:, None]).norm(dim=-1)[off_diagonal]  # (B * (B - 1),)
    return dist / dist.mean().clamp_min(1e-12)


def triplet_cosines(x: torch.Tensor) -> torch.Tensor:
    """``psi_A(i, j, k) = <e_ij, e_kj>``, ``e_ij = (x_i - x_j) / ||x_i - x_j||``, the cosine of the
    angle at x_j: ``(B, D) -> (B, B, B)``, ``[j, i, k]``, 0 where two of i, j, k are equal (so a
    sum over the whole tensor is a sum over the ``B (B - 1) (B - 2)`` triplets of distinct indices,
    without the cost of selecting them).

    From the Gram matrix ``G`` of the centred batch: ``(x_i - x_j) . (x_k - x_j) = G_ik - G_ij -
    G_jk + G_jj``, so the cost is ``B^2 D + B^3`` rather than the ``B^3 D`` of forming every
    ``e_ij`` (``B = 128, D = 512``: about 100x fewer multiply-adds). ``e_ij = 0`` where
    ``x_i = x_j`` (up to rounding), so such triplets give cosine 0.
    """
    # centring leaves the angles as they are and, in double precision, keeps the differences of
    # Gram entries accurate; the (B, B, B) products then run in single precision
    x = (x - x.mean(0)).double()
    g = x @ x.T  # (B, B)
    norms = g.diagonal()
    dots = (g[None, :, :] - g[:, :, None] - g[:, None, :] + norms[:, None, None]).float()  # dots[j, i, k], (B, B, B)
    square = norms[None, :] - 2 * g + norms[:, None]  # square[j, i] = ||x_i - x_j||^2, (B, B)
    apart = square > 1e-20 * norms.mean().clamp_min(1e-300)  # x_i and x_j differ beyond rounding; not i = j
    inverse = torch.where(apart, torch.where(apart, square, 1.0).rsqrt(), 0.0).float()  # no inf in the gradient
    cos = dots * inverse[:, :, None] * inverse[:, None, :]  # cos[j, i, k]; 0 where i = j or k = j
    cos.diagonal(dim1=1, dim2=2).zero_()  # i = k
    return cos


@register("rkd", Contract(adapt=False, mean_over="batch"))
class RelationalKD(nn.Module):
    """``loss = distance_weight * L_D + angle_weight * L_A``, both Huber (smooth-L1, delta = 1).

    ``L_D = mean_{i != j} huber(psi_D^s(i, j), psi_D^t(i, j))``, ``psi_D(i, j) = ||x_i - x_j|| / mu``,
    ``mu`` the mean distance over the pairs i != j of the same embedding.
    ``L_A = mean over distinct i, j, k of huber(psi_A^s(i, j, k), psi_A^t(i, j, k))``,
    ``psi_A(i, j, k) = cos of the angle x_i x_j x_k``.

    The paper writes sums over pairs and triplets; this takes means (as the authors' code does,
    though their means also count the degenerate pairs i = j and triplets, which add 0), so the
    paper's weights 25 and 50 act on per-pair and per-triplet values.
    Both terms are invariant to translating, rotating or scaling either embedding; they
    compare relations within each, so the widths may differ. 0 for a batch of one; the angle
    term is 0 below three samples.

    Args:
        distance_weight: weight of L_D (>= 0; 25 in the paper).
        angle_weight: weight of L_A (>= 0; 50 in the paper).
    Inputs:
        student: ``(B, Ds)``, teacher: ``(B, Dt)``; higher dims are flattened.
    """


    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError("distance_weight and angle_weight must be >= 0")
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student, teacher, target=None):
        s, t = student.flatten(1).float(), teacher.flatten(1).float()  # (B, Ds), (B, Dt)
        loss = student.sum() * 0.0
        if len(s) >= 2 and self.distance_weight:
            d_loss = F.smooth_l1_loss(normalised_distances(s), normalised_distances(t))
            loss = loss + self.distance_weight * d_loss
        if len(s) >= 3 and self.angle_weight:
            n = len(s)
            a_loss = F.smooth_l1_loss(triplet_cosines(s), triplet_cosines(t), reduction="sum") / (n * (n - 1) * (n - 2))
            loss = loss + self.angle_weight * a_loss
        return loss
