import math

import pytest
import torch

from kdistill.evaluate.embedding import (
    encoding_speed,
    evaluate_embedders,
    mean_cosine,
    neighbour_overlap,
    size_on_disk,
)
from kdistill.errors import KDistillError


def on_circle(degrees: list[float]) -> torch.Tensor:
    """Unit vectors at the given angles: ``(N, 2)``."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], 1)


def test_mean_cosine_by_hand():
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    assert mean_cosine(x, 7 * x) == pytest.approx(1.0)
    assert mean_cosine(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [3.0, 0.0]])) == 0.0
    # rows: (3, 4).(4, 3) / 25 = 24/25 and (1, 0).(1, 1) / sqrt(2) = 1/sqrt(2)
    student = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    teacher = torch.tensor([[4.0, 3.0], [1.0, 1.0]])
    assert mean_cosine(student, teacher) == pytest.approx((24 / 25 + 1 / math.sqrt(2)) / 2)


def test_mean_cosine_needs_equal_widths():
    with pytest.raises(KDistillError, match="widths differ"):
        mean_cosine(torch.ones(3, 2), torch.ones(3, 4))
    with pytest.raises(KDistillError, match="one row per sample"):
        mean_cosine(torch.ones(3, 2), torch.ones(4, 2))


def test_neighbour_overlap_of_same_and_rotated_embeddings_is_one():
    x = torch.randn(50, 8, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert neighbour_overlap(x, x) == 1.0
    assert neighbour_overlap(x @ rotation, x) == 1.0
    assert neighbour_overlap(3 * x, x, k=5, chunk_size=7) == 1.0  # lengths do not matter, nor chunks


def test_neighbour_overlap_by_hand():
    # teacher at 0, 10, 30, 70 degrees; 2 nearest others: {1, 2}, {0, 2}, {1, 0}, {2, 1}
    teacher = on_circle([0, 10, 30, 70])
    # student at 0, 10, 45, 40 degrees, wider (3 columns), rows of any length:
    # 2 nearest others: {1, 3}, {0, 3}, {3, 1}, {2, 1}; shared 1, 1, 1, 2 of 2
    student = torch.cat([on_circle([0, 10, 45, 40]), torch.zeros(4, 1)], 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    assert neighbour_overlap(student, teacher, k=2) == pytest.approx(5 / 8)
    assert neighbour_overlap(student, teacher, k=2, chunk_size=3) == pytest.approx(5 / 8)
    # k = 1: row 0 and 1 agree, row 2 (teacher 1, student 3) does not, row 3 (2 and 2) does
    assert neighbour_overlap(student, teacher, k=1) == pytest.approx(3 / 4)
    with pytest.raises(KDistillError, match="k=4"):
        neighbour_overlap(student, teacher, k=4)


def test_encoding_speed_batches_and_is_positive():
    sizes = []

    def encode(batch: list[str]) -> torch.Tensor:
        sizes.append(len(batch))
        return torch.zeros(len(batch), 4)

    speed = encoding_speed(encode, [f"sentence {i}" for i in range(70)], batch_size=32, warmup=1, repeats=2)
    assert speed > 0 and math.isfinite(speed)
    assert sizes == [32] + [32, 32, 6] * 2  # one untimed warm-up batch, then two passes
    with pytest.raises(KDistillError, match="no texts"):
        encoding_speed(encode, [])


def test_size_on_disk(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vocab.txt").write_bytes(b"y" * 23)
    assert size_on_disk(tmp_path) == 123
    assert size_on_disk(str(tmp_path / "weights.bin")) == 100
    with pytest.raises(KDistillError, match="neither a file nor a folder"):
        size_on_disk(tmp_path / "missing")


def test_evaluate_embedders_keys_and_no_cosine_between_different_widths():
    from torch import nn

    class FirstThree(nn.Module):
        def forward(self, x):
            return x[:, :3]

    y = torch.arange(3).repeat(10)
    x = 10 * torch.eye(3, 5)[y] + 0.1 * torch.randn(30, 5)
    models = {"teacher": nn.Identity(), "student": FirstThree()}
    result = evaluate_embedders(models, x, y, x, y, "cpu", shots=(1, 5), speed_samples=4)
    scores = {"prototype@1", "logreg@1", "prototype@5", "logreg@5"}
    scores |= {k.replace("@", "_balanced@") for k in scores} | {"majority_rate"}
    common = {"classes", "sentences_per_s", "params", "weight_bytes", "speedup"}
    assert set(result["teacher"]) == scores | common
    assert set(result["student"]) == scores | common | {"neighbour_overlap@10"}  # 5 against 3 wide: no cosine
    assert result["student"]["logreg@5"] == 1.0 and 0.0 <= result["student"]["neighbour_overlap@10"] <= 1.0


def test_evaluate_embedders_leaves_out_classes_too_small_for_the_largest_draw():
    from torch import nn

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    pool_labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 2)
    test_labels = torch.tensor([0] * 12 + [1] * 12 + [2] * 12)
    pool = centres[pool_labels] + 0.1 * torch.randn(len(pool_labels), 2, generator=g)
    test = centres[test_labels] + 0.1 * torch.randn(len(test_labels), 2, generator=g)
    models = {"teacher": nn.Identity(), "student": nn.Identity()}
    result = evaluate_embedders(models, pool, pool_labels, test, test_labels, "cpu", shots=(1, 5), speed_samples=4)
    student = result["student"]
    assert student["classes"] == 2  # class 2 has 2 pool samples, fewer than 5
    assert student["prototype@1"] == 1.0 and student["logreg@5"] == 1.0 and student["logreg_balanced@5"] == 1.0
    assert student["majority_rate"] == 0.5  # over the test samples of the two classes judged: 12 and 12
    assert student["mean_cosine"] == pytest.approx(1.0) and student["neighbour_overlap@10"] == 1.0


def test_evaluate_embedders_refuses_a_pool_too_small_for_the_largest_draw_in_one_line():
    from torch import nn

    pool_labels = torch.tensor([0] * 20 + [1] * 3 + [2] * 2)
    pool, test = torch.randn(len(pool_labels), 2), torch.randn(6, 2)
    with pytest.raises(KDistillError, match=r"embedding.shots: .* hold \[20, 3, 2\] samples; set embedding.shots "
                                            r"to at most 3") as err:
        evaluate_embedders({"teacher": nn.Identity()}, pool, pool_labels, test, torch.tensor([0, 1, 2] * 2), "cpu",
                           shots=(1, 5))
    assert "\n" not in str(err.value)
