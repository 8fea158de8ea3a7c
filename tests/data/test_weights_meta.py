"""The class names a weights file records, written and read back."""

import pytest
from torch import nn

from kdistill.data.weights_meta import classes_metadata, read_classes
from kdistill.errors import KDistillError
from kdistill.models.weights import save_weights


def test_class_names_are_recorded_in_the_metadata_and_read_back(tmp_path):
    model = nn.Linear(3, 2)
    save_weights(model, tmp_path / "named.safetensors", {"recipe": "r", **classes_metadata(["Bag", "T-shirt/top", "é"])})
    assert read_classes(tmp_path / "named.safetensors") == ["Bag", "T-shirt/top", "é"]
    save_weights(model, tmp_path / "plain.safetensors", {"recipe": "r", **classes_metadata(None)})
    assert read_classes(tmp_path / "plain.safetensors") is None and read_classes(tmp_path / "missing.safetensors") is None
    save_weights(model, tmp_path / "bad.safetensors", {"classes": "[1, 2]"})
    with pytest.raises(KDistillError, match="records unreadable class names under 'classes'"):
        read_classes(tmp_path / "bad.safetensors")
