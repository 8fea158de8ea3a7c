"""export_sentence_transformer (kdistill/models/text_encoder_folder.py): a text-encoder student as a folder that
plain transformers and sentence-transformers load, giving the student's own embeddings."""

import json

import pytest
from fixtures import ENCODER_TEXTS as TEXTS, tiny_encoder
import torch

transformers = pytest.importorskip("transformers")

from kdistill.errors import KDistillError  # noqa: E402
from kdistill.models.text_encoder_folder import export_sentence_transformer  # noqa: E402
from kdistill.models.subnet import sub_network  # noqa: E402

pytestmark = pytest.mark.usefixtures("offline_hub")


def transformers_embeddings(folder, texts, normalize=True):
    """Mean-pooled embeddings computed with plain transformers from an exported folder, as
    docs/workflows/text-encoder.md says: truncation=True, with no length named (the folder's own)."""
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
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


LONG_TEXTS = [" ".join(["the big red car on the road ran fast"] * 4), "a dog", " ".join(["happy fish"] * 12)]


def test_texts_longer_than_the_encoder_takes_are_cut_where_it_cuts_them(tokenizer_dir, tmp_path):
    encoder = tiny_encoder(tokenizer_dir)  # max_length 24; the model itself has 64 positions
    encoder.tokenizer("a b c " * 20, truncation=True, max_length=40, padding="max_length")  # a call leaves state
    expected = encoder.encode(LONG_TEXTS)
    assert encoder.tokenize(LONG_TEXTS).shape[2] == 24
    out = export_sentence_transformer(encoder, tmp_path / "st")
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 24
    assert json.loads((out / "tokenizer.json").read_text())["truncation"]["max_length"] == 24
    assert encoder.tokenizer.model_max_length != 24  # the encoder's own tokenizer is left as it was
    got, _ = transformers_embeddings(out, LONG_TEXTS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    got, model = st_embeddings(out, LONG_TEXTS)
    assert model.max_seq_length == 24
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    tokenizers = pytest.importorskip("tokenizers")  # the tokenizers library alone reads tokenizer.json
    assert len(tokenizers.Tokenizer.from_file(str(out / "tokenizer.json")).encode(LONG_TEXTS[0]).ids) == 24


def test_a_runs_student_hf_gives_the_runs_embeddings_of_long_texts(tiny_bert, tmp_path, monkeypatch):
    """The run cuts texts at data.text.max_length (6 tokens here) while the teacher's args say
    nothing (model 'hf' defaults to 128): the exported folder must cut where the run did."""
    from kdistill import run
    from kdistill.data.text import tokenize_texts

    monkeypatch.setattr("kdistill.runner.write_report", lambda *a, **k: None)  # its figures take seconds
    sentences = tmp_path / "long.csv"
    words = "the a dog cat bird runs sleeps flies over under big small red blue tree house car road".split()
    rows = [" ".join(words[(i + j) % len(words)] for j in range(4 + i % 9)) + f",c{i % 2}" for i in range(140)]
    sentences.write_text("text,label\n" + "\n".join(rows) + "\n")
    recipe = {"name": "long", "latency": False, "embedding": None,
              "data": {"source": "csv", "path": str(sentences), "labelled": 4, "text": {"test": 20, "max_length": 6}},
              "teacher": {"model": "hf", "args": {"path": str(tiny_bert)}},
              "student": {"from_teacher": {"layers": 1, "pick": "first"}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "batch_size": 16,
                          "loss": [{"loss": "embed_cosine"}]}]}
    result = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    student = result.models["student"].cpu().eval()
    texts = [" ".join(words[i:] + words[:i]) for i in range(5)]  # 18 words each: far past 6 tokens
    with torch.no_grad():  # the run's own inputs: its data's tokens, cut at data.text.max_length
        expected = student(tokenize_texts(texts, student.tokenizer, 6))
    folder = result.run_dir / "student_hf"
    got, _ = transformers_embeddings(folder, texts)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    got, model = st_embeddings(folder, texts)
    assert model.max_seq_length == 6
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(student.encode(texts), expected, atol=1e-6, rtol=0)  # the model's own encode too


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
