import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.fewshot import (balanced_accuracy, few_label_accuracy, knn_predict, logreg_predict,
                                       majority_rate, prototype_logits, prototypes)


def test_prototypes_and_distances_by_hand():
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    protos = prototypes(emb, torch.tensor([0, 0, 1]), 2)
    assert torch.equal(protos, torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    # query (1, 1): squared distances 1 and 1 + 9 = 10
    assert torch.allclose(prototype_logits(torch.tensor([[1.0, 1.0]]), protos), torch.tensor([[-1.0, -10.0]]))


def test_knn_majority_vote():
    support = torch.tensor([[0.0], [0.1], [5.0], [5.1], [5.2]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert knn_predict(torch.tensor([[0.05], [4.0]]), support, labels, 2, k=3).tolist() == [0, 1]


def test_separable_clusters_are_solved_with_one_label():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat(20)
    x = centres[y] + 0.1 * torch.randn(60, 2)
    acc = few_label_accuracy(x, y, x, y, shots=(1, 5, 50))
    assert acc["prototype@1"] == 1.0 and acc["knn@5"] == 1.0
    assert "prototype@50" not in acc  # only 20 samples a class in the pool


def blobs(per_class: int = 20, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian blobs: ``(3 * per_class, dim), (3 * per_class,)``."""
    centres = 10 * torch.eye(3, dim)
    y = torch.arange(3).repeat(per_class)
    return centres[y] + 0.1 * torch.randn(len(y), dim), y


def test_logreg_predict_by_hand():
    support = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert logreg_predict(torch.tensor([[0.5], [10.5]]), support, labels).tolist() == [0, 1]
    # a single class in the support: that class everywhere
    assert logreg_predict(torch.tensor([[0.5], [10.5]]), support[:2], labels[:2]).tolist() == [0, 0]


def test_logreg_solves_separable_blobs_at_five_shots():
    x, y = blobs()
    acc = few_label_accuracy(x, y, x, y, shots=(5,), methods=("prototype", "logreg"))
    assert set(acc) == {"prototype@5", "logreg@5", "prototype_balanced@5", "logreg_balanced@5", "majority_rate"}
    assert acc["logreg@5"] == 1.0


def test_methods_are_opt_in_and_share_the_draws():
    x, y = blobs()
    x = x + 4 * torch.randn_like(x)  # overlapping classes, so accuracies depend on the draw
    default = few_label_accuracy(x, y, x, y, shots=(1, 5), draws=2)
    plain = {"prototype@1", "knn@1", "prototype@5", "knn@5"}
    assert set(default) == plain | {k.replace("@", "_balanced@") for k in plain} | {"majority_rate"}
    both = few_label_accuracy(x, y, x, y, shots=(1, 5), draws=2, methods=("prototype", "knn", "logreg"))
    assert set(both) == set(default) | {"logreg@1", "logreg@5", "logreg_balanced@1", "logreg_balanced@5"}
    assert all(both[key] == default[key] for key in default)  # adding logreg changes no draw
    assert set(few_label_accuracy(x, y, x, y, shots=(1,), draws=1, methods="logreg")) == {
        "logreg@1", "logreg_balanced@1", "majority_rate"}


def test_unknown_method_is_a_clear_error():
    x, y = blobs(per_class=2)
    with pytest.raises(KDistillError, match="unknown 'svm'"):
        few_label_accuracy(x, y, x, y, shots=(1,), methods=("prototype", "svm"))


def test_balanced_accuracy_and_majority_rate_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0, 0, 2])
    # recalls 5/6, 1/3 and 1/1
    assert balanced_accuracy(pred, labels) == pytest.approx((5 / 6 + 1 / 3 + 1) / 3)
    assert balanced_accuracy(torch.zeros(10, dtype=torch.long), labels) == pytest.approx(1 / 3)
    assert majority_rate(labels) == pytest.approx(0.6)
    # classes the test set lacks take no part, whatever is predicted
    assert balanced_accuracy(torch.tensor([2, 1]), torch.tensor([1, 1])) == pytest.approx(0.5)


def test_a_classifier_that_mostly_says_the_common_class_is_seen_for_what_it_is():
    """69/31 test classes whose embeddings carry no class at all: accuracy may look like much,
    balanced accuracy stays at chance, and the majority-class rate is reported beside them."""
    g = torch.Generator().manual_seed(0)
    support_labels = torch.tensor([0] * 20 + [1] * 20)
    query_labels = torch.tensor([0] * 69 + [1] * 31)
    support, query = torch.randn(40, 8, generator=g), torch.randn(100, 8, generator=g)
    acc = few_label_accuracy(support, support_labels, query, query_labels, shots=(10,), draws=5)
    assert acc["majority_rate"] == pytest.approx(0.69)
    for method in ("prototype", "knn"):
        assert acc[f"{method}_balanced@10"] == pytest.approx(0.5, abs=0.1)
        assert 0 <= acc[f"{method}_balanced@10"] <= 1
    # a query set all of one class: always right for a classifier that always says it
    one = few_label_accuracy(support, support_labels, support[:20], support_labels[:20], shots=(1,), draws=1)
    assert one["majority_rate"] == 1.0
    assert one["prototype_balanced@1"] == pytest.approx(one["prototype@1"])  # one class: recall is accuracy
