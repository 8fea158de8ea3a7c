"""Tiny causal language models and a tiny byte-level BPE tokenizer, built in the tests.

A plain module (not part of the kdistill package). Nothing is downloaded: the tokenizer is
trained by the ``tokenizers`` library on ``LM_TEXTS`` and the models are random configs of
three families (GPT-2, Llama, Qwen2) small enough to train in a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

LM_WORDS = ("the a dog cat bird runs sleeps flies over under big small red blue tree house car road "
            "river stone light dark fast slow green old young sings eats sees").split()


def lm_texts(n: int = 200, seed: int = 0, words: int = 12) -> list[str]:
    """``n`` sentences of 3..``words`` words drawn from ``LM_WORDS``, ending with a full stop."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, words + 1, (1,), generator=g))
        picks = torch.randint(len(LM_WORDS), (k,), generator=g).tolist()
        out.append(" ".join(LM_WORDS[i] for i in picks) + ".")
    return out


def save_tiny_tokenizer(folder: str | Path, vocab_size: int = 320, chat: bool = False) -> Path:
    """A byte-level BPE tokenizer trained on ``lm_texts()``, saved as a transformers
    ``PreTrainedTokenizerFast`` folder with ``<|endoftext|>`` as bos, eos and pad (and a chat
    template when ``chat``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lm_texts(400), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    if chat:
        fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
                              "{% if add_generation_prompt %}<assistant>{% endif %}")
    fast.save_pretrained(folder)
    return folder


# tiny configs of three families; vocab_size is filled in from the tokenizer
TINY_CONFIGS = {
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 4, "n_head": 4, "n_positions": 64},
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64},
    "qwen2": {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64},
}


def save_tiny_causal(folder: str | Path, family: str = "llama", seed: int = 0, tokenizer: str | Path | None = None,
                     sharpen: float = 1.0, **overrides) -> Path:
    """A random ``AutoModelForCausalLM`` of ``family`` (gpt2, llama, qwen2) saved with
    ``save_pretrained`` in ``folder``, with the tiny tokenizer (trained there, or copied from
    ``tokenizer``). ``sharpen``: the final norm's scale multiplied by it, so that the random
    model's next-token distributions are peaked rather than nearly uniform."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else None
    if tok is None:
        save_tiny_tokenizer(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    args = {**TINY_CONFIGS[family], **overrides}
    model_type = args.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **args)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        final = model.get_decoder().norm if hasattr(model.get_decoder(), "norm") else model.get_decoder().ln_f
        final.weight.mul_(sharpen)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
