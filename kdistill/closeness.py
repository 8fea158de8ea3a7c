"""How close a student's embeddings are to a teacher's, from the tensors alone: the mean cosine
of each sample's pair, and the share of each sample's nearest neighbours the two spaces agree on.
The evaluation reports them; feature providers (``objective/projected.py``) score with them too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdistill.errors import KDistillError


def check_rows(name: str, *tensors: torch.Tensor) -> None:
    """Raise unless every tensor is a matrix ``(N, D)`` with the same number of rows N (widths may differ)."""
    for t in tensors:
        if t.dim() != 2:
            raise KDistillError(f"{name}: embeddings must be a matrix (N, D); got shape {tuple(t.shape)}.")
    rows = {len(t) for t in tensors}
    if len(rows) > 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise KDistillError(f"{name}: embeddings must have one row per sample on both sides; got {shapes}.")


def mean_cosine(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean over rows of cosine(student_i, teacher_i): ``(N, D), (N, D) -> float``."""
    check_rows("mean_cosine", student, teacher)
    if student.shape[1] != teacher.shape[1]:
        raise KDistillError(
            f"mean_cosine: widths differ (student {student.shape[1]}, teacher {teacher.shape[1]}); "
            "project one side to the other's width first."
        )
    return F.cosine_similarity(student.detach().float(), teacher.detach().float(), dim=1).mean().item()


def nearest_rows(unit: torch.Tensor, start: int, stop: int, k: int) -> torch.Tensor:
    """Indices of the k most similar other rows of rows ``start:stop`` of unit-length rows: ``(N, D) -> (C, k)``."""
    sims = unit[start:stop] @ unit.T  # (C, N)
    rows = torch.arange(len(sims), device=sims.device)
    sims[rows, rows + start] = float("-inf")  # not the row itself
    return sims.topk(k, dim=1).indices


def neighbour_overlap(student: torch.Tensor, teacher: torch.Tensor, k: int = 10, chunk_size: int = 1024) -> float:
    """Mean over rows of |A ∩ B| / k, where A and B are the row's k nearest other rows by cosine
    similarity under the student and under the teacher: ``(N, Ds), (N, Dt) -> float``.
    """
    check_rows("neighbour_overlap", student, teacher)
    if not 1 <= k < len(student):
        raise KDistillError(
            f"neighbour_overlap: k={k} must be at least 1 and below the number of rows ({len(student)})."
        )
    s_unit = F.normalize(student.detach().float(), dim=1)
    t_unit = F.normalize(teacher.detach().float(), dim=1)
    total = 0
    for start in range(0, len(student), chunk_size):  # at most (chunk_size, N) similarities at once
        a = nearest_rows(s_unit, start, start + chunk_size, k)
        b = nearest_rows(t_unit, start, start + chunk_size, k)
        total += (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum().item()  # (C, k, k) -> shared count
    return total / (len(student) * k)
