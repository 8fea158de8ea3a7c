import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kdistill.errors import KDistillError  # noqa: E402
from kdistill.export import export_onnx, export_sentence_transformer  # noqa: E402
from kdistill.models.hf import hf_encoder  # noqa: E402
from kdistill.models.subnet import sub_network  # noqa: E402
from kdistill.models.zoo import build_model  # noqa: E402

WORDS = ("the a cat dog sat on mat ran fast slow big small red blue green house tree car road "
         "sun moon star sky sea fish bird jump eat play happy").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TEXTS = ["the cat sat on the mat", "a dog", "big red car on the road ran fast",
         "sun moon and star", "happy fish"]  # "and" is unknown: [UNK]
CONFIG = {"model_type": "bert", "vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def tiny_encoder(tokenizer_dir, **kwargs):
    torch.manual_seed(0)
    return hf_encoder(config=CONFIG, tokenizer=str(tokenizer_dir), max_length=24, **kwargs)


def transformers_embeddings(folder, texts, normalize=True):
    """Mean-pooled embeddings computed with plain transformers from an exported folder."""
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return (torch.nn.functional.normalize(emb, dim=-1) if normalize else emb), model.config


def st_embeddings(folder, texts):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(folder), device="cpu")
    return torch.as_tensor(model.encode(texts, convert_to_numpy=True)), model


def test_export_loads_in_transformers_and_sentence_transformers(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir)
    expected = encoder.encode(TEXTS)
    out = export_sentence_transformer(encoder, tmp_path / "st")
    assert out == tmp_path / "st" and not (tmp_path / "st.incomplete").exists()
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 32
    assert [m["path"] for m in json.loads((out / "modules.json").read_text())] == ["", "1_Pooling", "2_Normalize"]
    got, _ = transformers_embeddings(out, TEXTS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    got, model = st_embeddings(out, TEXTS)
    assert model.max_seq_length == 24
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_exported_folder_is_byte_reproducible_and_readable(tokenizer_dir, tmp_path):
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    first = export_sentence_transformer(tiny_encoder(tokenizer_dir), tmp_path / "a")
    second = export_sentence_transformer(tiny_encoder(tokenizer_dir), tmp_path / "b")
    weights = (first / "model.safetensors", second / "model.safetensors")
    assert weights[0].read_bytes() == weights[1].read_bytes()
    assert {stat.S_IMODE(p.stat().st_mode) for p in first.rglob("*") if p.is_file()} == {0o666 & ~mask}


def test_export_without_normalize_omits_the_module(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir, normalize=False)
    out = export_sentence_transformer(encoder, tmp_path / "raw")
    assert [m["path"] for m in json.loads((out / "modules.json").read_text())] == ["", "1_Pooling"]
    got, _ = st_embeddings(out, TEXTS)
    torch.testing.assert_close(got, encoder.encode(TEXTS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ffn", [None, 32])
def test_sub_network_student_exports(tokenizer_dir, tmp_path, ffn):
    student = sub_network(tiny_encoder(tokenizer_dir), keep=[1], ffn=ffn)
    expected = student.encode(TEXTS)
    out = export_sentence_transformer(student, tmp_path / "student")
    got, config = transformers_embeddings(out, TEXTS)
    assert config.num_hidden_layers == 1 and config.intermediate_size == (ffn or 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    got, _ = st_embeddings(out, TEXTS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_head_pruned_student_is_refused(tokenizer_dir, tmp_path):
    student = sub_network(tiny_encoder(tokenizer_dir), keep=[0], heads=1)
    with pytest.raises(KDistillError, match="heads unset"):
        export_sentence_transformer(student, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists() and not (tmp_path / "pruned.incomplete").exists()


def test_weights_out_of_step_with_config_are_refused(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir)
    del encoder.model.encoder.layer[0]  # config still says 2 layers
    with pytest.raises(KDistillError, match="do not fit its own config"):
        export_sentence_transformer(encoder, tmp_path / "bad")


def test_non_empty_folder_needs_overwrite(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir)
    out = tmp_path / "st"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(KDistillError, match="overwrite=True"):
        export_sentence_transformer(encoder, out)
    assert (out / "notes.txt").read_text() == "keep me"
    export_sentence_transformer(encoder, out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (export_sentence_transformer(encoder, empty) / "model.safetensors").is_file()


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
