"""Hugging Face encoders as sentence-embedding models, and sub-networks cut from them."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdistill.errors import KDistillError
from kdistill.models.hf import mean_pool
from kdistill.models.subnet import pick_layers, sub_network
from kdistill.models.taps import FeatureTaps
from kdistill.models.zoo import build_model

TEXTS = ["the dog runs over the road", "a small red bird flies", "sun", "the big tree under the blue moon"]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2), last position padding
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_embeddings_are_normalised_mean_pools_independent_of_padding(tiny_bert):
    enc = build_model("hf", path=str(tiny_bert))
    x = enc.tokenize(TEXTS)
    assert x.shape[:2] == (4, 2) and x.dtype == torch.int64
    emb = enc.eval()(x)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    # by hand: the model's last hidden state, averaged over the real tokens, normalised
    ids, mask = x[2:3, 0], x[2:3, 1]
    n = int(mask.sum())
    hidden = enc.model(input_ids=ids[:, :n], attention_mask=mask[:, :n]).last_hidden_state
    assert torch.allclose(emb[2], F.normalize(hidden.mean(1), dim=-1)[0], atol=1e-5)
    # a text alone or padded in a batch embeds the same; trimming the padding changes nothing
    assert torch.allclose(enc.encode(TEXTS[2:3]), emb[2:3], atol=1e-5)
    enc.trim = False
    assert torch.allclose(enc(x), emb, atol=1e-5)


def test_same_embeddings_as_sentence_transformers(tiny_bert):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.models import Normalize, Pooling, Transformer

    model = st.SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(32, "mean"), Normalize()],
                                   device="cpu")
    ours = build_model("hf", path=str(tiny_bert)).encode(TEXTS)
    assert torch.allclose(ours, torch.tensor(model.encode(TEXTS)), atol=1e-5)


def test_taps_on_transformer_layers(tiny_bert):
    enc = build_model("hf", path=str(tiny_bert)).eval()
    x = enc.tokenize(TEXTS)
    with FeatureTaps(enc, ["model.encoder.layer.1"], "teacher") as taps:
        enc(x)
    assert taps.features["model.encoder.layer.1"].shape == (4, x.shape[2], 32)  # the hidden state, not a tuple


def test_pick_layers():
    assert pick_layers(6, 2, "first_last") == [0, 5]
    assert pick_layers(6, 3, "first_last") == [0, 2, 5]
    assert pick_layers(6, 2, "even") == [2, 5]
    assert pick_layers(6, 3, "even") == [1, 3, 5]
    assert pick_layers(6, 2, "first") == [0, 1]
    with pytest.raises(KDistillError, match="cannot keep 7 of 6"):
        pick_layers(6, 7)


def test_sub_network_keeps_layers_and_weights_and_leaves_the_teacher(tiny_bert):
    teacher = build_model("hf", path=str(tiny_bert)).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = sub_network(teacher, keep=[1])
    assert len(student.model.encoder.layer) == 1 and student.model.config.num_hidden_layers == 1
    assert torch.equal(student.model.encoder.layer[0].output.dense.weight, teacher.model.encoder.layer[1].output.dense.weight)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert len(teacher.model.encoder.layer) == 2
    # keeping every layer reproduces the teacher exactly
    x = teacher.tokenize(TEXTS)
    assert torch.allclose(sub_network(teacher, keep=[0, 1]).eval()(x), teacher(x), atol=1e-6)


def test_fewer_heads_and_narrower_ffn(tiny_bert):
    teacher = build_model("hf", path=str(tiny_bert)).eval()
    x = teacher.tokenize(TEXTS)
    # all heads and the full width: the same function
    same = sub_network(teacher, keep=[0, 1], heads=4, ffn=64).eval()
    assert torch.allclose(same(x), teacher(x), atol=1e-5)
    small = sub_network(teacher, keep=[0], heads=2, ffn=16).eval()
    layer = small.model.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16 and layer.attention.output.dense.in_features == 16
    assert layer.intermediate.dense.out_features == 16 and small.model.config.intermediate_size == 16
    assert small(x).shape == (4, 32)
    # the kept feed-forward units are those with the largest output weights
    norms = teacher.model.encoder.layer[0].output.dense.weight.norm(dim=0)
    kept = layer.output.dense.weight.norm(dim=0)
    assert torch.allclose(kept.sort().values, norms.topk(16).values.sort().values)


def test_sub_network_of_a_resnet_keeps_chosen_blocks():
    teacher = build_model("resnet", widths=[4, 8], blocks_per_stage=3)
    student = sub_network(teacher, keep={"stages.0": [0, 2], "stages.1": [0]})
    assert len(student.stages[0]) == 2 and len(student.stages[1]) == 1
    assert torch.equal(student.stages[0][1].conv1.weight, teacher.stages[0][2].conv1.weight)
    assert student(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(KDistillError, match="blocks 0..2"):
        sub_network(teacher, keep={"stages.0": [3]})
    with pytest.raises(KDistillError, match="transformer"):
        sub_network(teacher, keep=[0])


def _copy_of(tiny_bert, folder, drop=()):
    """A copy of the tiny BERT folder in ``folder``, less the files named in ``drop``."""
    import shutil

    shutil.copytree(tiny_bert, folder)
    for name in drop:
        (folder / name).unlink()
    return folder


def test_a_folder_of_pickled_weights_is_refused_before_anything_is_unpickled(tiny_bert, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    # what save_pretrained(safe_serialization=False) wrote on transformers 4: pytorch_model.bin, a pickle
    folder = _copy_of(tiny_bert, tmp_path / "pickled", drop=["model.safetensors"])
    torch.save(transformers.AutoModel.from_pretrained(tiny_bert).state_dict(), folder / "pytorch_model.bin")
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or {})
    with pytest.raises(KDistillError, match=r"pickled holds its weights only as a pickle \(pytorch_model.bin\)") as err:
        build_model("hf", path=str(folder))
    assert unpickled == [] and "\n" not in str(err.value)
    assert "save_pretrained" in str(err.value) and str(folder) in str(err.value)


@pytest.mark.parametrize("case, match", [
    ("missing", "folder .*missing does not exist"),
    ("no config", "has no config.json"),
    ("broken config", r"cannot read .*config.json \(.*not a valid JSON"),
    ("unknown architecture", r"cannot read .*config.json \(.*nosuchmodel"),
    ("no weights", "holds no model.safetensors"),
    ("truncated weights", "safetensors weights in .* cannot be read"),
    ("a file", "model.safetensors is a file"),
])
def test_a_bad_model_folder_is_one_line(tiny_bert, tmp_path, case, match):
    pytest.importorskip("transformers")
    folder = tmp_path / "missing" if case == "missing" else _copy_of(tiny_bert, tmp_path / "model")
    if case == "no config":
        (folder / "config.json").unlink()
    elif case == "broken config":
        (folder / "config.json").write_text('{"model_type": "bert", ')
    elif case == "unknown architecture":
        (folder / "config.json").write_text('{"model_type": "nosuchmodel"}')
    elif case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:3000])
    elif case == "a file":
        folder = folder / "model.safetensors"
    with pytest.raises(KDistillError, match=match) as err:
        build_model("hf", path=str(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


@pytest.mark.parametrize("name", ["no-such-folder", "models/no-such-folder", "./no-such-folder"])
def test_a_mistyped_folder_says_it_does_not_exist(name, offline_hub, tmp_path, monkeypatch):
    """A name that could be a model id too (no './' in front) fails as a missing folder first,
    not as a hub error; so does its tokenizer (a text run loads it first)."""
    pytest.importorskip("transformers")
    from kdistill.data.tokenizer import load_tokenizer

    # the environment variable is read when huggingface_hub is first imported (maybe by an earlier test)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    for load, what in ((lambda: build_model("hf", path=name), "model 'hf'"), (lambda: load_tokenizer(name), "tokenizer")):
        with pytest.raises(KDistillError) as err:
            load()
        message = str(err.value)
        assert message.startswith(f"{what}: folder {name} does not exist (looked for {tmp_path / Path(name)}")
        assert "correct the" in message and "\n" not in message
