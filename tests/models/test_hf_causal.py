"""Hugging Face causal LMs as kdistill models: forward, head, taps, layer cuts, Minitron pruning, export."""

import copy

import pytest
import torch
from lm_fixtures import lm_texts, save_tiny_causal

from kdistill.errors import KDistillError
from kdistill.models.hf_causal import (
    CausalLM,
    export_causal_lm,
    fix_after_layer_cut,
    hf_causal,
    prune_width,
    rank_block_drop,
)
from kdistill.models.subnet import sub_network
from kdistill.models.taps import FeatureTaps, resolve_module
from kdistill.models.zoo import build_model

pytest.importorskip("transformers")

FAMILIES = ("gpt2", "llama", "qwen2")
STACKS = {"gpt2": "model.transformer.h", "llama": "model.model.layers", "qwen2": "model.model.layers"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``{family: folder}`` of tiny random causal LMs (4 layers, width 32) sharing one tokenizer."""
    root = tmp_path_factory.mktemp("causal")
    out = {"gpt2": save_tiny_causal(root / "gpt2", "gpt2")}
    for family in ("llama", "qwen2"):
        out[family] = save_tiny_causal(root / family, family, seed=1, tokenizer=out["gpt2"])
    return out


@pytest.fixture(scope="module")
def teachers(folders):
    return {family: hf_causal(path=str(folder)).eval() for family, folder in folders.items()}


def pack(tokenizer, texts):
    """``(B, 3, L)``: ids, attention mask (right padding), loss mask (every real token but the first)."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    loss = enc["attention_mask"].clone()
    loss[:, 0] = 0
    return torch.stack([enc["input_ids"], enc["attention_mask"], loss], 1)


@pytest.fixture(scope="module")
def batch(teachers):
    return pack(teachers["llama"].tokenizer, lm_texts(6, seed=3))


def prompts(tokenizer):
    tokenizer.padding_side = "left"
    enc = tokenizer(["the dog runs", "a big red bird flies over"], padding=True, return_tensors="pt")
    tokenizer.padding_side = "right"
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_is_final_hidden_state_read_by_head(teachers, batch, family):
    lm = teachers[family]
    hidden = lm(batch)
    assert hidden.shape == (6, batch.shape[-1], 32) and lm.vocab_size == lm.config.vocab_size == 320
    ref = lm.model(input_ids=batch[:, 0], attention_mask=batch[:, 1], output_hidden_states=True)
    assert torch.allclose(hidden, ref.hidden_states[-1], atol=1e-5)
    weight, bias = lm.output_head()
    assert weight.shape == (320, 32) and weight.requires_grad
    by_hand = hidden @ weight.T + (0 if bias is None else bias)
    assert torch.allclose(by_hand, ref.logits, atol=1e-5) and torch.allclose(lm.logits(batch), ref.logits, atol=1e-5)
    # right padding does not change the real positions; (B, 2, L) and (B, L) inputs read the same
    n = int(batch[2, 1].sum())
    alone = lm(batch[2:3, 0, :n])
    assert torch.allclose(alone, hidden[2:3, :n], atol=1e-5)
    assert torch.allclose(lm(batch[:, :2]), hidden)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_stack_and_taps_on_decoder_layers(teachers, batch, family):
    lm = teachers[family]
    assert lm.layer_stack == STACKS[family] and len(resolve_module(lm, lm.layer_stack)) == 4
    with FeatureTaps(lm, [f"{lm.layer_stack}.1", "logits"], "teacher") as taps:
        lm(batch)
        feats = taps.collect(None)
    assert feats[f"{lm.layer_stack}.1"].shape == (6, batch.shape[-1], 32)


def test_builder_from_config_and_registry(folders):
    lm = build_model("hf_causal", config={"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
                                          "num_hidden_layers": 3, "num_attention_heads": 2, "vocab_size": 50},
                     tokenizer=str(folders["gpt2"]))
    assert isinstance(lm, CausalLM) and lm.layer_stack == "model.model.layers" and lm.tokenizer is not None
    assert lm(torch.randint(50, (2, 5))).shape == (2, 5, 16)


def test_builder_errors(tmp_path, folders):
    from transformers import AutoConfig, AutoModel

    with pytest.raises(KDistillError, match="folder .*nope does not exist"):
        hf_causal(path=str(tmp_path / "nope"))
    with pytest.raises(KDistillError, match="exactly one of"):
        hf_causal()
    encoder = tmp_path / "encoder"
    AutoModel.from_config(AutoConfig.for_model("distilbert", dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                               vocab_size=50)).save_pretrained(encoder)
    with pytest.raises(KDistillError, match="'distilbert' model, which is not a causal language model") as err:
        hf_causal(path=str(encoder))
    assert "\n" not in str(err.value)
    with pytest.raises(KDistillError, match=r"shape \(2, 4, 3\)"):
        hf_causal(path=str(folders["llama"]))(torch.zeros(2, 4, 3, dtype=torch.long))


@pytest.mark.parametrize("family", FAMILIES)
def test_cut_student_generates_with_the_kv_cache(teachers, family):
    student = sub_network(teachers[family], keep=[0, 2]).eval()
    fix_after_layer_cut(student, [0, 2])
    layers = resolve_module(student, student.layer_stack)
    assert student.config.num_hidden_layers == 2 and len(layers) == 2
    assert [m.layer_idx for layer in layers for m in layer.modules() if hasattr(m, "layer_idx")] == [0, 1]
    if family == "qwen2":
        assert student.config.layer_types == ["full_attention"] * 2
    ids, mask = prompts(student.tokenizer)
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    cached = student.generate(ids, mask, use_cache=True, **kw)
    assert cached.shape[1] > ids.shape[1]
    assert torch.equal(cached, student.generate(ids, mask, use_cache=False, **kw))


def make_identity(layer, family):
    """Zero what a layer writes to the residual stream, so it passes its input through."""
    outs = (layer.attn.c_proj, layer.mlp.c_proj) if family == "gpt2" else (layer.self_attn.o_proj, layer.mlp.down_proj)
    with torch.no_grad():
        for proj in outs:
            proj.weight.zero_()
            if proj.bias is not None:
                proj.bias.zero_()


@pytest.mark.parametrize("family", ("gpt2", "llama"))
def test_rank_block_drop_drops_the_layer_that_does_nothing(teachers, batch, family):
    lm = copy.deepcopy(teachers[family])
    make_identity(resolve_module(lm, lm.layer_stack)[2], family)
    before = lm.logits(batch)
    assert rank_block_drop(lm, batch, keep=3) == [0, 1, 3]
    kept = rank_block_drop(lm, batch, keep=2)
    dropped = sorted(set(range(4)) - set(kept))
    assert len(kept) == 2 and 2 in dropped and dropped == list(range(dropped[0], dropped[0] + 2))
    assert rank_block_drop(lm, batch, keep=4) == [0, 1, 2, 3]
    # the model is left as it was
    assert lm.config.num_hidden_layers == 4 and torch.equal(lm.logits(batch), before)
    with pytest.raises(KDistillError, match="keep between 1 and 4"):
        rank_block_drop(lm, batch, keep=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_width_keeping_everything_changes_nothing(teachers, batch, family):
    lm = copy.deepcopy(teachers[family])
    before = lm.logits(batch)
    prune_width(lm, batch, heads=None if family == "gpt2" else 4, ffn=128 if family == "gpt2" else 64)
    assert torch.allclose(lm.logits(batch), before, atol=1e-5)


@pytest.mark.parametrize("family", ("llama", "qwen2"))
def test_prune_width_keeps_the_most_active_group_and_units(teachers, batch, family):
    lm = copy.deepcopy(teachers[family])
    layers = resolve_module(lm, lm.layer_stack)
    with torch.no_grad():
        for layer in layers:  # key/value group 1 (query heads 2, 3) and units 5, 40 made the loudest
            layer.self_attn.v_proj.weight[8:] *= 20
            layer.mlp.up_proj.weight[[5, 40]] *= 20
    original = [copy.deepcopy(layer) for layer in layers]
    prune_width(lm, batch, heads=2, ffn=2)
    config = lm.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 8)
    assert config.intermediate_size == 2 and config.hidden_size == 32
    for layer, old in zip(layers, original):
        attn, mlp = layer.self_attn, layer.mlp
        assert attn.q_proj.weight.shape == (16, 32) and attn.k_proj.weight.shape == attn.v_proj.weight.shape == (8, 32)
        assert attn.o_proj.weight.shape == (32, 16) and attn.num_key_value_groups == 2
        assert torch.equal(attn.q_proj.weight, old.self_attn.q_proj.weight[16:])
        assert torch.equal(attn.k_proj.weight, old.self_attn.k_proj.weight[8:])
        assert torch.equal(attn.o_proj.weight, old.self_attn.o_proj.weight[:, 16:])
        if family == "qwen2":
            assert torch.equal(attn.q_proj.bias, old.self_attn.q_proj.bias[16:]) and attn.v_proj.bias.shape == (8,)
        assert torch.equal(mlp.down_proj.weight, old.mlp.down_proj.weight[:, [5, 40]])
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (2, 32)
    assert lm(batch).shape == (6, batch.shape[-1], 32)


def test_prune_width_gpt2_ffn_and_refusals(teachers, batch):
    gpt2 = copy.deepcopy(teachers["gpt2"])
    prune_width(gpt2, batch, ffn=24)
    mlp = resolve_module(gpt2, gpt2.layer_stack)[0].mlp
    assert mlp.c_fc.weight.shape == (32, 24) and mlp.c_proj.weight.shape == (24, 32) and gpt2.config.n_inner == 24
    assert gpt2(batch).shape == (6, batch.shape[-1], 32)
    with pytest.raises(KDistillError, match="GPT-2 config .* cannot express fewer heads"):
        prune_width(gpt2, batch, heads=2)
    llama = teachers["llama"]
    with pytest.raises(KDistillError, match=r"heads 3: 4 query heads share 2 key/value groups.*one of \[2, 4\]"):
        prune_width(llama, batch, heads=3)
    with pytest.raises(KDistillError, match="ffn 65 must be between 1 and the MLP width 64"):
        prune_width(llama, batch, ffn=65)
    neox = build_model("hf_causal", config={"model_type": "gpt_neox", "hidden_size": 16, "num_hidden_layers": 2,
                                            "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 50})
    with pytest.raises(KDistillError, match="does not know the decoder layer GPTNeoXLayer"):
        prune_width(neox, torch.randint(50, (1, 4)), ffn=8)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip(teachers, batch, tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student = sub_network(teachers[family], keep=[0, 3]).eval()
    fix_after_layer_cut(student, [0, 3])
    prune_width(student, batch, heads=None if family == "gpt2" else 2, ffn=40)
    folder = export_causal_lm(student, tmp_path / "out" / "student")
    export_causal_lm(student, folder)  # replacing an export
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["student"]
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert torch.equal(pack(tok, lm_texts(6, seed=3)), batch)
    logits = loaded(input_ids=batch[:, 0], attention_mask=batch[:, 1]).logits
    assert torch.allclose(logits, student.logits(batch), atol=1e-5)
    ids, mask = prompts(tok)
    kw = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(loaded.generate(input_ids=ids, attention_mask=mask, **kw), student.generate(ids, mask, **kw))
