"""Solving the target task by distances in an embedding space, with few labels.

Class prototypes (the mean embedding of the few labelled samples of each class) and
k-nearest neighbours, with 1, 5, 10 and 50 labels a class.
"""

from __future__ import annotations

import torch


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean embedding of each class: ``(N, D), (N,) -> (K, D)``."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype).index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).unsqueeze(1)
    return sums / counts


def prototype_logits(embeddings: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared distances to the prototypes: ``(N, D), (K, D) -> (N, K)``.

    Their softmax is M(x), the prototype classifier's distribution.
    """
    return -torch.cdist(embeddings, protos).pow(2)


def knn_predict(query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor,
                num_classes: int, k: int) -> torch.Tensor:
    """Majority vote of the k nearest support embeddings (ties go to the nearer neighbours)."""
    dist = torch.cdist(query, support)  # (Q, S)
    k = min(k, len(support))
    near = dist.topk(k, largest=False)  # sorted, nearest first
    votes = torch.zeros(len(query), num_classes)
    # weight 1 + tiny rank bonus breaks ties towards nearer neighbours
    weights = 1.0 + 1e-3 * torch.arange(k, 0, -1, dtype=torch.float32) / k
    votes.scatter_add_(1, support_labels[near.indices], weights.expand(len(query), k))
    return votes.argmax(1)


def pick_per_class(labels: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor | None:
    """``shots`` random indices of each class, or None when a class has fewer."""
    picked = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < shots:
            return None
        picked.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picked)


def few_label_accuracy(
    support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
    shots: tuple[int, ...] = (1, 5, 10, 50), k: int = 5, draws: int = 5, seed: int = 0,
) -> dict[str, float]:
    """Accuracy of the prototype classifier and of k-NN with ``shots`` labels a class.

    Args:
        support: embeddings of the labelled pool ``(N, D)`` the few labels are drawn from.
        query: embeddings of the test set ``(Q, D)``.
        k: neighbours for k-NN (at most the number of labels drawn).
        draws: random draws of the labels, averaged.
    Returns:
        ``{"prototype@S": acc, "knn@S": acc}`` for each S the pool has enough samples for.
    """
    num_classes = int(max(support_labels.max(), query_labels.max())) + 1
    g = torch.Generator().manual_seed(seed)
    results: dict[str, float] = {}
    for s in shots:
        proto_acc, knn_acc = [], []
        for _ in range(draws):
            idx = pick_per_class(support_labels, s, g)
            if idx is None:
                break
            x, y = support[idx], support_labels[idx]
            pred = prototype_logits(query, prototypes(x, y, num_classes)).argmax(1)
            proto_acc.append((pred == query_labels).float().mean().item())
            knn = knn_predict(query, x, y, num_classes, min(k, s))
            knn_acc.append((knn == query_labels).float().mean().item())
        if proto_acc:
            results[f"prototype@{s}"] = sum(proto_acc) / len(proto_acc)
            results[f"knn@{s}"] = sum(knn_acc) / len(knn_acc)
    return results
