"""Test fixtures written to disk: a tiny random BERT and made-up sentences, nothing downloaded.

A plain module (not part of the kdistill package): ``tests/conftest.py`` and some tests import it
(``pythonpath = ["tests"]`` in pyproject.toml), and
``bench/text.py --quick`` imports it after putting this folder on ``sys.path``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

TINY_WORDS = ("the a dog cat bird runs sleeps flies over under big small red blue tree house car road "
              "sun moon eats food water stone hand foot tool knife song music").split()


def bert_tokenizer(vocab_file: Path):
    """A WordPiece tokenizer over the words of ``vocab_file`` (one a line). transformers 5 reads
    the file through ``vocab=`` and silently ignores ``vocab_file=`` (every word then becomes
    [UNK]); 4.x reads ``vocab_file=``. Checked: the last word of the file is a token of its own."""
    import inspect

    import transformers

    key = "vocab" if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = transformers.BertTokenizerFast(**{key: str(vocab_file)})
    last = Path(vocab_file).read_text().split()[-1]
    assert tok.convert_tokens_to_ids(last) != tok.unk_token_id, f"tokenizer lost its vocabulary ({len(tok)} tokens)"
    return tok


def save_tiny_bert(folder: str | Path, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random BERT (width 32, 4 heads) and a WordPiece tokenizer over ``TINY_WORDS``
    into ``folder``: a Hugging Face model for smoke runs and tests, with nothing downloaded.
    Its weights are drawn large (initializer_range 0.3) so that every layer changes the output."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]) + "\n")
    bert_tokenizer(vocab).save_pretrained(folder)
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=5 + len(TINY_WORDS), hidden_size=32, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     initializer_range=0.3)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def write_tiny_sentences(path: str | Path, n: int = 240, seed: int = 0) -> Path:
    """A CSV (text, label) of ``n`` six-word sentences over ``TINY_WORDS`` in 3 classes, each
    class drawing its words from its own third of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    groups = [TINY_WORDS[0:10], TINY_WORDS[10:20], TINY_WORDS[20:]]
    rows = ["text,label"]
    for i in range(n):
        words = groups[i % 3]
        rows.append(" ".join(words[j] for j in torch.randint(len(words), (6,), generator=g).tolist()) + f",c{i % 3}")
    path = Path(path)
    path.write_text("\n".join(rows) + "\n")
    return path


def _write_idx(path, array):
    import gzip

    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(folder, n_train=12, n_test=4, seed=0):
    """A folder of the four (Fashion-)MNIST IDX .gz files holding random 28x28 images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def write_photos(root, good: int = 6, bad: int = 3) -> Path:
    """``root/cat``, ``root/dog``: ``good`` tiny 8x8 PNGs a class, and ``bad`` corrupt .jpg files
    in dog/ (the first a truncated JPEG, the rest not images at all)."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(good):
            Image.fromarray(np.full((8, 8, 3), 60 + 120 * k + i, dtype=np.uint8)).save(root / name / f"{i}.png")
    whole = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(whole, "JPEG")
    for i in range(bad):
        (root / "dog" / f"broken{i}.jpg").write_bytes(whole.getvalue()[:120] if i == 0 else b"not a jpeg")
    return root


def photo_recipe(root, name: str = "photos", test: int = 4, **images) -> dict:
    """A recipe training a tiny CNN student on ``write_photos``' folder, images squashed to 8x8."""
    return {"name": name, "latency": False, "threads": 1,
            "data": {"source": "image_folder", "path": str(root), "labelled": 4, "files": {"test": test},
                     "images": {"size": [8, 8], **images}},
            "student": {"model": "cnn", "args": {"in_channels": 3, "num_classes": 2, "channels": [4], "image_size": 8}},
            "stages": [{"name": "s", "train": "student", "data": "labelled", "epochs": 1, "batch_size": 4,
                        "loss": [{"loss": "ce"}]}]}


def stage_records(run_dir) -> dict[str, list[dict]]:
    """A run's metrics.jsonl, its records grouped by stage name (each stage's epochs in order)."""
    import json
    from pathlib import Path

    grouped: dict[str, list[dict]] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        grouped.setdefault(record["stage"], []).append(record)
    return grouped


# a tiny random BERT encoder with a WordPiece tokenizer over a few words (export tests)
ENCODER_WORDS = ("the a cat dog sat on mat ran fast slow big small red blue green house tree car road "
                 "sun moon star sky sea fish bird jump eat play happy").split()
ENCODER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ENCODER_WORDS
ENCODER_TEXTS = ["the cat sat on the mat", "a dog", "big red car on the road ran fast",
                 "sun moon and star", "happy fish"]  # "and" is unknown: [UNK]
ENCODER_CONFIG = {"model_type": "bert", "vocab_size": len(ENCODER_VOCAB), "hidden_size": 32, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


def write_bert_tokenizer(folder):
    """A WordPiece tokenizer over ``ENCODER_VOCAB`` saved in ``folder``."""

    (folder / "vocab.txt").write_text("\n".join(ENCODER_VOCAB) + "\n")
    bert_tokenizer(folder / "vocab.txt").save_pretrained(folder)
    return folder


def tiny_encoder(tokenizer_dir, **kwargs):
    """A random 2-layer BERT (``ENCODER_CONFIG``) as an ``HFEncoder`` with that tokenizer."""
    import torch

    from kdistill.models.hf import hf_encoder

    torch.manual_seed(0)
    return hf_encoder(config=ENCODER_CONFIG, tokenizer=str(tokenizer_dir), max_length=24, **kwargs)


def two_class_recipe(name: str, data: dict) -> dict:
    """A run on two easy classes of 8x8 images from ``data`` (a recipe's data section): a small
    teacher trained on all the labels, then a student distilled on the transfer set."""
    return {"name": name, "latency": False, "data": data,
            "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8, "num_classes": 2}},
            "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [16], "num_classes": 2}},
            "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2, "batch_size": 32},
                       {"name": "distil", "data": "transfer", "epochs": 3, "batch_size": 16,
                        "loss": [{"loss": "kd", "args": {"temperature": 2}}]}]}


def cli_in_process(args: list[str], monkeypatch, capsys) -> str:
    """``kdistill <args>`` in this process (a subprocess spends seconds importing torch;
    tests/test_cli.py runs the real command), the report's figures skipped; its stdout."""
    import sys

    import kdistill.cli as cli

    monkeypatch.setattr("kdistill.runner.write_report", lambda *a, **k: None)  # its figures take seconds
    monkeypatch.setattr(sys, "argv", ["kdistill", *map(str, args)])
    threads = torch.get_num_threads()
    try:
        cli.main()
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out.strip()


# the tokens of the tiny teacher of the static-embedding tests: TINY_WORDS, a plural ending, and
# a BERT placeholder that a static student leaves out
STATIC_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", *TINY_WORDS, "##s"]


def save_static_teacher(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random BERT (width 32) and a WordPiece tokenizer that knows every word of
    ``TINY_WORDS`` (``STATIC_VOCAB``) into ``folder``: the teacher a static-embedding student is
    built from. The tokenizer is made with the ``tokenizers`` library, with a placeholder token
    (``[unused0]``) and a continuation piece (``##s``) the static student must handle."""
    import transformers
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = Tokenizer(models.WordPiece({t: i for i, t in enumerate(STATIC_VOCAB)}, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wordpiece.decoder = decoders.WordPiece()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(STATIC_VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=256,
                                     initializer_range=0.3)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def as_terminal(monkeypatch) -> io.StringIO:
    """stderr as a terminal, and bars shown at once (not after a few seconds). Called in the test
    itself: pytest sets sys.stderr again between a fixture and the test."""
    from kdistill import progress

    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(progress, "DELAY", 0)
    return stream


def interrupted_run(tree: dict, runs_dir: str | Path, after: int = 12) -> Path:
    """``tree`` run under ``runs_dir`` and stopped, as if killed, at its ``after``-th optimisation
    step (give it checkpoints often enough to have one by then). Returns ``<name>.incomplete``."""
    import kdistill.train.loop as loop
    from kdistill import run

    real, calls = loop.step, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    loop.step = dying
    try:
        run(tree, runs_dir=runs_dir, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        loop.step = real
    return Path(runs_dir) / f"{tree['name']}.incomplete"
