"""Preprocessing (kdistill/data/preprocess.py): recorded with the weights kdistill writes and read back
with a teacher's weights. How a run chooses it: tests/data/test_load.py."""

import json
from pathlib import Path

import pytest
import torch

from kdistill.data import Preprocess, read_preprocess
from kdistill.errors import KDistillError

RECIPES = Path(__file__).resolve().parents[2] / "kdistill" / "recipes"


def test_metadata_round_trip_and_the_legacy_keys():
    p = Preprocess(255.0, (0.5,), (0.25,))
    meta = p.to_metadata()
    assert list(meta) == ["preprocess"] and json.loads(meta["preprocess"]) == {"divide_by": 255.0, "mean": [0.5],
                                                                               "std": [0.25]}
    assert Preprocess.from_metadata(meta) == p
    assert Preprocess.from_metadata({"recipe": "x", "mean": "[0.5]", "std": "[0.25]"}) == Preprocess(None, (0.5,),
                                                                                                      (0.25,))
    assert Preprocess.from_metadata({"recipe": "x"}) is None
    assert Preprocess.from_info({"mean": [0.5], "std": [0.25]}) == Preprocess(None, (0.5,), (0.25,))
    raw = torch.tensor([[[[0.0, 255.0]]]])
    assert p(raw).flatten().tolist() == [-2.0, 2.0]  # (x / 255 - 0.5) / 0.25
    with pytest.raises(KDistillError, match="mean"):
        Preprocess.from_dict({"divide_by": 1.0, "mean": [0.5], "std": None})


def test_the_demo_teachers_weights_record_its_mean_and_std():
    recorded = read_preprocess(RECIPES / "fmnist_teacher.safetensors")  # written before divide_by was recorded
    assert recorded == Preprocess(None, (0.28604060411453247,), (0.3530242443084717,))
