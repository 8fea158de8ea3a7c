import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.adapters import build_adapter, build_adapters


@pytest.mark.parametrize(
    "student_shape, teacher_shape",
    [((8, 4, 4), (16, 8, 8)), ((8, 7, 7), (32, 7, 7)), ((8,), (16,)), ((8, 4, 4), (16,)), ((5, 8), (5, 12))],
)
def test_adapter_maps_student_shape_to_teacher_shape(student_shape, teacher_shape):
    adapter = build_adapter(student_shape, teacher_shape)
    assert adapter(torch.randn(2, *student_shape)).shape == (2, *teacher_shape)


def test_equal_shapes_need_no_adapter():
    assert isinstance(build_adapter((8, 4, 4), (8, 4, 4)), nn.Identity)


def test_incompatible_shapes_fail_clearly():
    with pytest.raises(KDistillError, match="cannot map"):
        build_adapter((8,), (16, 4, 4))


def test_built_from_a_dry_forward_pass():
    s_feats = {"stages.1": torch.randn(2, 8, 7, 7)}
    t_feats = {"stages.2": torch.randn(2, 32, 7, 7)}
    adapters = build_adapters([("stages.1", "stages.2")], s_feats, t_feats)
    (adapter,) = adapters.values()
    assert adapter.proj.in_channels == 8 and adapter.proj.out_channels == 32
