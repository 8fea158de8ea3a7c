import torch

from kdistill.fewshot import few_label_accuracy, knn_predict, prototype_logits, prototypes


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
