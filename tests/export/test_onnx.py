"""export_onnx (kdistill/export/onnx.py): a model as an ONNX graph with dynamic batch (and sequence)
axes, checked against PyTorch under onnxruntime; a text model's graph takes input_ids and attention_mask."""

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


def _session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_text_encoder_takes_the_tokenizers_outputs(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir).train()
    sample = encoder.tokenize(TEXTS[:2])
    result = export_onnx(encoder, sample, tmp_path / "enc.onnx")
    assert result["max_abs_diff"] <= 1e-4 and result["bytes"] > 0 and result["path"] == str(tmp_path / "enc.onnx")
    assert result["inputs"] == ["input_ids", "attention_mask"]
    assert encoder.training and encoder.trim  # modes restored
    session = _session(tmp_path / "enc.onnx")
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)", ["batch", "sequence"]), ("attention_mask", "tensor(int64)", ["batch", "sequence"])]
    # what a runtime user feeds: the tokenizer's own outputs, another batch size and length, padded
    # with columns no text uses (the original trims them, the graph keeps them masked)
    texts = TEXTS[1:] + ["sky"]
    enc = encoder.tokenizer(texts, padding="max_length", truncation=True, max_length=20, return_tensors="np")
    assert enc["input_ids"].shape[0] != sample.shape[0] and enc["input_ids"].shape[1] != sample.shape[2]
    got = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    torch.testing.assert_close(torch.from_numpy(got), encoder.encode(texts), atol=1e-4, rtol=0)


def test_onnx_of_any_text_model_by_its_input_layout(tmp_path):
    """A text model that is no HFEncoder (a token-embedding table, mean-pooled) takes packed
    (B, 2, L) tokens too: its graph takes input_ids and attention_mask all the same."""

    class MeanOfEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(30, 4)

        def forward(self, x):  # (B, 2, L) -> (B, 4)
            mask = x[:, 1].unsqueeze(-1).float()
            return (self.table(x[:, 0]) * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    model = MeanOfEmbeddings()
    ids = torch.randint(1, 30, (3, 2, 7))
    ids[:, 1] = (torch.arange(7) < torch.tensor([[7], [4], [2]])).long()
    result = export_onnx(model, ids, tmp_path / "bag.onnx")
    assert result["inputs"] == ["input_ids", "attention_mask"] and result["max_abs_diff"] <= 1e-5
    other = torch.randint(1, 30, (5, 2, 11))
    other[:, 1] = 1
    got = _session(tmp_path / "bag.onnx").run(None, {"input_ids": other[:, 0].numpy(), "attention_mask": other[:, 1].numpy()})
    torch.testing.assert_close(torch.from_numpy(got[0]), model(other), atol=1e-5, rtol=0)


def test_onnx_cnn_dynamic_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = build_model("cnn", channels=[4, 8], image_size=28)
    result = export_onnx(model, torch.randn(2, 1, 28, 28), tmp_path / "sub" / "cnn.onnx")
    assert result["max_abs_diff"] <= 1e-4 and result["inputs"] == ["input"]  # images: one input, as before
    assert [(i.name, i.shape) for i in _session(tmp_path / "sub" / "cnn.onnx").get_inputs()] == [
        ("input", ["batch", 1, 28, 28])]
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
