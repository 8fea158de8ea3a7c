"""Solving the target task by distances in an embedding space, with few labels.

Class prototypes (the mean embedding of the few labelled samples of each class),
k-nearest neighbours and, on request, logistic regression, with 1, 5, 10 and 50 labels a class.
Each is judged by accuracy and by balanced accuracy (the mean recall of the classes), beside the
majority-class rate of the test set: on imbalanced classes, accuracy alone flatters a classifier
that mostly predicts the common class.
"""

from __future__ import annotations

import torch

from kdistill.errors import KDistillError, shown

METHODS = ("prototype", "knn", "logreg")


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


def logreg_predict(query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
    """Classes by scikit-learn's logistic regression (lbfgs, default C) fitted on the support.

    ``(Q, D), (S, D), (S,) -> (Q,)``; a support of a single class predicts that class.
    BLAS runs on one thread: the fit is small, and more threads beside torch's oversubscribe the CPU.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    classes = support_labels.unique()
    if len(classes) == 1:
        return classes.expand(len(query)).clone()
    with threadpool_limits(limits=1, user_api="blas"):
        model = LogisticRegression(max_iter=1000)
        model.fit(support.detach().cpu().double().numpy(), support_labels.cpu().numpy())
        return torch.from_numpy(model.predict(query.detach().cpu().double().numpy()))


def balanced_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in ``labels`` of the share of their samples ``pred`` gets
    right (per-class recall): ``(N,), (N,) -> float``; chance level is 1 / classes whatever the
    class sizes."""
    classes, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
    hits = torch.zeros(len(classes)).index_add_(0, inverse, (pred == labels).float())
    return (hits / counts).mean().item()


def majority_rate(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most common class of ``labels (N,)``."""
    return labels.unique(return_counts=True)[1].max().item() / len(labels)


def pick_per_class(labels: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor | None:
    """``shots`` random indices of each class, or None when a class has fewer."""
    picked = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < shots:
            return None
        picked.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picked)


def check_methods(methods: tuple[str, ...] | str) -> tuple[str, ...]:
    """The few-label methods as a tuple, each one of ``METHODS``."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise KDistillError(f"few-label methods: none given; choose from {', '.join(METHODS)}.")
    for m in methods:
        if m not in METHODS:
            raise KDistillError(f"few-label methods: unknown {shown(m)}; choose from {', '.join(METHODS)}.")
    return methods


def predict_with(method: str, query: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 num_classes: int, k: int) -> torch.Tensor:
    """Classes of the query ``(Q, D)`` by ``method``, given labelled embeddings ``(S, D), (S,)``: ``(Q,)``."""
    if method == "prototype":
        return prototype_logits(query, prototypes(x, y, num_classes)).argmax(1)
    if method == "knn":
        return knn_predict(query, x, y, num_classes, k)
    return logreg_predict(query, x, y)


def few_label_accuracy(
    support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
    shots: tuple[int, ...] = (1, 5, 10, 50), k: int = 5, draws: int = 5, seed: int = 0,
    methods: tuple[str, ...] = ("prototype", "knn"),
) -> dict[str, float]:
    """Accuracy of few-label classifiers (prototype, k-NN, logistic regression) with ``shots`` labels a class.

    Args:
        support: embeddings of the labelled pool ``(N, D)`` the few labels are drawn from.
        query: embeddings of the test set ``(Q, D)``.
        k: neighbours for k-NN (at most the number of labels drawn).
        draws: random draws of the labels, averaged; every method sees the same draws.
        methods: any of ``"prototype"``, ``"knn"`` and ``"logreg"``.
    Returns:
        ``{"<method>@S": accuracy, "<method>_balanced@S": balanced accuracy}`` for each method
        and each S the pool has enough samples for, and ``"majority_rate"``: the accuracy of
        always predicting the test set's most common class.
    """
    methods = check_methods(methods)
    num_classes = int(max(support_labels.max(), query_labels.max())) + 1
    g = torch.Generator().manual_seed(seed)
    results: dict[str, float] = {}
    for s in shots:
        scores: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}  # (accuracy, balanced) a draw
        for _ in range(draws):
            idx = pick_per_class(support_labels, s, g)
            if idx is None:
                break
            x, y = support[idx], support_labels[idx]
            for m in methods:
                pred = predict_with(m, query, x, y, num_classes, min(k, s))
                accuracy = (pred == query_labels).float().mean().item()
                scores[m].append((accuracy, balanced_accuracy(pred, query_labels)))
        for m in methods:
            if scores[m]:
                results[f"{m}@{s}"] = sum(a for a, _ in scores[m]) / len(scores[m])
                results[f"{m}_balanced@{s}"] = sum(b for _, b in scores[m]) / len(scores[m])
    if len(query_labels):
        results["majority_rate"] = majority_rate(query_labels)
    return results
