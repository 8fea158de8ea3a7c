"""The decoder-layer families width pruning knows (kdistill/models/decoder_arch.py): each layer is
matched to its Arch by its modules, and an Arch names the parts in which the families differ."""

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.decoder_arch import ARCHS, arch_of

transformers = pytest.importorskip("transformers")

CONFIGS = {  # tiny configs: 2 heads of 8, an MLP of 24 units
    "llama": {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24},
    "qwen2": {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24},
    "gpt2": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_inner": 24},
}


def layer_of(model_type: str) -> nn.Module:
    config = transformers.AutoConfig.for_model(model_type, vocab_size=64, bos_token_id=0, eos_token_id=0,
                                               **CONFIGS[model_type])
    model = transformers.AutoModelForCausalLM.from_config(config)
    return (model.transformer.h if model_type == "gpt2" else model.model.layers)[0]


@pytest.mark.parametrize(("model_type", "arch"), [("llama", "llama"), ("qwen2", "llama"), ("gpt2", "gpt2")])
def test_each_layer_is_matched_to_its_family_and_narrowed_by_it(model_type, arch):
    layer = layer_of(model_type)
    found = arch_of(layer)
    assert found is ARCHS[arch]
    assert found.mlp_width(layer) == 24
    keep = torch.tensor([0, 5, 23])
    weight = found.mlp_out(layer).weight.detach().clone()  # Linear (out, in); GPT-2's Conv1D (in, out)
    found.narrow_mlp(layer.mlp, keep)
    assert found.mlp_width(layer) == 3
    kept = weight[:, keep] if arch == "llama" else weight[keep]
    assert torch.equal(found.mlp_out(layer).weight.detach(), kept)  # the kept units' weights, as they were
    assert (found.heads_out is None) == (arch == "gpt2") and bool(found.no_heads) == (arch == "gpt2")
    assert found.ffn_field == {"llama": "intermediate_size", "gpt2": "n_inner"}[arch]


def test_a_layer_of_no_known_family_is_refused_naming_those_it_knows():
    with pytest.raises(KDistillError, match=r"does not know the decoder layer Linear; it prunes Llama-style layers "
                                            r"\(.*\) and GPT-2\.$"):
        arch_of(nn.Linear(2, 2))
