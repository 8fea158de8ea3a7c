import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.evaluate.fewshot import few_label_accuracy, knn_predict, logreg_predict, prototype_logits, prototypes


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
    assert set(acc) == {"prototype@5", "logreg@5"}
    assert acc["logreg@5"] == 1.0


def test_methods_are_opt_in_and_share_the_draws():
    x, y = blobs()
    x = x + 4 * torch.randn_like(x)  # overlapping classes, so accuracies depend on the draw
    default = few_label_accuracy(x, y, x, y, shots=(1, 5), draws=2)
    assert set(default) == {"prototype@1", "knn@1", "prototype@5", "knn@5"}
    both = few_label_accuracy(x, y, x, y, shots=(1, 5), draws=2, methods=("prototype", "knn", "logreg"))
    assert set(both) == set(default) | {"logreg@1", "logreg@5"}
    assert all(both[key] == default[key] for key in default)  # adding logreg changes no draw
    assert set(few_label_accuracy(x, y, x, y, shots=(1,), draws=1, methods="logreg")) == {"logreg@1"}


def test_unknown_method_is_a_clear_error():
    x, y = blobs(per_class=2)
    with pytest.raises(KDistillError, match="unknown 'svm'"):
        few_label_accuracy(x, y, x, y, shots=(1,), methods=("prototype", "svm"))
