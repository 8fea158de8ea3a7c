"""export_onnx (kdistill/export/onnx.py): a model as an ONNX graph with dynamic batch (and sequence)
axes, checked against PyTorch under onnxruntime."""

import pytest
from fixtures import ENCODER_TEXTS as TEXTS, tiny_encoder
import torch

from kdistill.errors import KDistillError
from kdistill.export.onnx import export_onnx
from kdistill.models.zoo import build_model

pytestmark = pytest.mark.usefixtures("offline_hub")


def _onnx_outputs(path, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_onnx_text_encoder_dynamic_batch_and_sequence(tokenizer_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    encoder = tiny_encoder(tokenizer_dir).train()
    sample = encoder.tokenize(TEXTS[:2])
    result = export_onnx(encoder, sample, tmp_path / "enc.onnx")
    assert result["max_abs_diff"] <= 1e-4 and result["bytes"] > 0 and result["path"] == str(tmp_path / "enc.onnx")
    assert encoder.training and encoder.trim  # modes restored
    other = encoder.tokenize(TEXTS[1:] + ["sky"])  # 5 texts, another length
    assert other.shape[0] != sample.shape[0] and other.shape[2] != sample.shape[2]
    # padded with columns no text uses: the original trims them, the graph keeps them masked
    other = torch.cat([other, torch.zeros(other.shape[0], 2, 3, dtype=other.dtype)], dim=2)
    torch.testing.assert_close(_onnx_outputs(tmp_path / "enc.onnx", other), encoder.encode(TEXTS[1:] + ["sky"]),
                               atol=1e-4, rtol=0)


def test_onnx_cnn_dynamic_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = build_model("cnn", channels=[4, 8], image_size=28)
    result = export_onnx(model, torch.randn(2, 1, 28, 28), tmp_path / "sub" / "cnn.onnx")
    assert result["max_abs_diff"] <= 1e-4
    x = torch.randn(7, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(_onnx_outputs(tmp_path / "sub" / "cnn.onnx", x), expected, atol=1e-4, rtol=0)


def test_onnx_mismatch_is_reported(tmp_path):
    pytest.importorskip("onnxruntime")

    class Drifting(torch.nn.Module):
        """Its output changes with every call, so the traced graph cannot match a later run."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x * self.calls

    with pytest.raises(KDistillError, match="differs from PyTorch"):
        export_onnx(Drifting(), torch.ones(2, 3), tmp_path / "d.onnx", atol=1e-4)
    assert export_onnx(Drifting(), torch.ones(2, 3), tmp_path / "e.onnx", check=False)["bytes"] > 0
