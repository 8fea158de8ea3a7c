import math

import pytest
import torch

from kdistill.evaluate.embedding import (
    encoding_speed,
    evaluate_embedders,
    size_on_disk,
)
from kdistill.errors import KDistillError


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
