"""The language-model bench's teacher, built here, offline, reproducibly from a seed (make lm-teacher).

No pretrained causal language model can be installed on this machine, so the bench trains its
own on real English: WordNet's glosses and example sentences (all parts of speech). A fixed set
of texts is held out (``data.lm.test`` with ``data.split_seed``, the split every bench row uses)
and never seen by the tokenizer or any model. Then:

1. a byte-level BPE tokenizer of 8,192 tokens, trained by the ``tokenizers`` library on the
   training texts, saved as a transformers tokenizer (``<|endoftext|>`` ends every text);
2. a Llama-style model (grouped-query attention: 6 query heads sharing 2 key/value heads, so
   that fewer heads export as a standard config), width 384, 6 layers, tied embeddings, trained
   with kdistill itself: one ``train: teacher`` stage of next-token cross-entropy (``token_ce``)
   on the training texts packed into 128-token blocks (checkpointed: a stopped run resumes);
3. the trained model written as a transformers folder (``AutoModelForCausalLM`` loads it) with
   ``teacher.json``: its training and held-out perplexity, tokens, time and settings.

About 2.5 hours on 2 CPU cores (4 epochs; a stopped run resumes where it stopped). The folder (64 MB of float32 weights) is not committed: the bench
rebuilds it with this script when it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SEED = 0
EPOCHS = 4  # 1 epoch left it weaker than its 2-layer cut trained on 6,000 more blocks (held-out ppl 251.5 vs 221.1)
HELD_OUT = 3000  # WordNet texts held out for perplexity (every bench row uses this split)
VOCAB = 8192
BLOCK = 128
EOS = "<|endoftext|>"
CONFIG = {"model_type": "llama", "hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
          "num_attention_heads": 6, "num_key_value_heads": 2, "max_position_embeddings": BLOCK,
          "tie_word_embeddings": True, "rms_norm_eps": 1e-5}


POS = "all"  # WordNet's parts of speech read (--smoke: adverbs alone)


def data_section(tokenizer: Path) -> dict:
    """The recipe's ``data`` every bench row reads: WordNet packed into blocks, the fixed split."""
    return {"source": "lm_text", "split_seed": SEED,
            "lm": {"tokenizer": str(tokenizer), "block_size": BLOCK, "test": HELD_OUT, "pos": POS}}


def training_texts() -> list[str]:
    """WordNet's texts outside the held-out split (exactly the split ``lm_text`` makes)."""
    from kdistill.data.lm_text import held_out_rows
    from kdistill.data.text import load_wordnet

    texts = [t for t in load_wordnet(None, POS, True).texts if t.strip()]
    train_rows, _ = held_out_rows(len(texts), HELD_OUT, SEED)
    return [texts[i] for i in train_rows]


def train_tokenizer(texts: list[str], folder: Path) -> None:
    """A byte-level BPE tokenizer of ``VOCAB`` tokens trained on ``texts``, saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                            unk_token=EOS).save_pretrained(folder)


def teacher_recipe(tokenizer: Path, epochs: float, batch: int) -> dict:
    config = {**CONFIG, "vocab_size": VOCAB}
    return {"name": "lm-teacher", "seed": SEED, "device": "auto", "latency": False,
            "checkpoint": {"every": 200}, "data": data_section(tokenizer),
            "teacher": {"model": "hf_causal", "args": {"config": config, "tokenizer": str(tokenizer)}},
            "stages": [{"name": "teach", "train": "teacher", "data": "full", "epochs": epochs, "batch_size": batch,
                        # every parameter decayed, as the shipped teacher was trained
                        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.01, "decay_bias_and_norm": True},
                        "schedule": {"name": "cosine", "warmup_epochs": 0.05}, "grad_clip": 1.0,
                        "eval_every": 1, "loss": [{"loss": "token_ce"}]}]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "lm_teacher", help="the teacher's folder")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=Path, default=HERE / "results" / "runs")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and vocabulary, to check the script")
    args = parser.parse_args(argv)
    if args.smoke:
        global VOCAB, POS, HELD_OUT
        VOCAB, POS, HELD_OUT = 600, "adv", 300
        CONFIG.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1)
    import torch
    from safetensors.torch import load_file

    from kdistill import run
    from kdistill.models.hf_causal import export_causal_lm, hf_causal

    started = time.time()
    tokenizer = args.out.with_name(args.out.name + "-tokenizer")
    if not (tokenizer / "tokenizer.json").exists():
        train_tokenizer(training_texts(), tokenizer)
    recipe = teacher_recipe(tokenizer, args.epochs, args.batch)
    resume = args.runs / "lm-teacher.incomplete"
    result = run(recipe, runs_dir=args.runs, resume=resume if (resume / "recipe.yaml").exists() else None,
                 overwrite=True)
    model = hf_causal(config=recipe["teacher"]["args"]["config"], tokenizer=str(tokenizer))
    model.load_state_dict(load_file(result.run_dir / "teacher.safetensors"))
    export_causal_lm(model, args.out)
    test = result.summary["test"]["teacher"]
    info = {"held_out_perplexity": test["perplexity"], "held_out_tokens": test["tokens"],
            "train": result.summary["data"], "config": recipe["teacher"]["args"]["config"],
            "epochs": args.epochs, "batch": args.batch, "block": BLOCK, "seed": SEED, "held_out_texts": HELD_OUT,
            "params": sum(p.numel() for p in model.parameters()), "seconds": time.time() - started,
            "train_seconds": result.summary["stage_seconds"]["teach"],  # summed over every resumed segment
            "torch_threads": torch.get_num_threads()}
    (args.out / "teacher.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
