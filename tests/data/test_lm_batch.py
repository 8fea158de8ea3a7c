"""The layout of a language-model batch: ids, attention mask and loss mask."""

import pytest
import torch

from kdistill.data.lm_batch import prediction_mask, split_inputs
from kdistill.errors import KDistillError


def test_prediction_mask_is_the_loss_mask_shifted_left():
    x = torch.tensor([[[5, 6, 7, 0], [1, 1, 1, 0], [0, 0, 1, 0]]])  # only token 2 is a target
    assert prediction_mask(x).tolist() == [[False, True, False, False]]
    assert prediction_mask(x[:, :2]).tolist() == [[True, True, False, False]]


def test_split_inputs_reads_ids_and_mask_of_each_layout():
    ids, mask = split_inputs(torch.tensor([[3, 4]], dtype=torch.int32))  # ids alone: every token attended
    assert ids.dtype == torch.long and ids.tolist() == [[3, 4]] and mask.tolist() == [[1, 1]]
    packed = torch.tensor([[[3, 4, 0], [1, 1, 0], [0, 1, 0]]])
    assert [t.tolist() for t in split_inputs(packed)] == [[[3, 4, 0]], [[1, 1, 0]]]
    with pytest.raises(KDistillError, match=r"shape \(2, 4, 3\)"):
        split_inputs(torch.zeros(2, 4, 3, dtype=torch.long))
