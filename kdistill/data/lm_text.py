"""Text for causal language models: ``data.source: lm_text`` (a corpus packed into blocks) and
``lm_pairs`` (prompt/response pairs).

A fetched batch is one int64 tensor ``(B, 3, L)``: ``[:, 0]`` token ids, ``[:, 1]`` attention
mask (1: a real token, 0: right padding), ``[:, 2]`` loss mask (1 where token ``t`` is a
prediction target, i.e. the prediction made at position ``t - 1`` counts; always 0 at ``t = 0``
and on padding). Every sample is unlabelled (``y`` all -1, ``num_classes`` 0).

The texts (``data.path`` and ``data.lm``): a ``.txt`` file (one text a line, blank lines
skipped), a ``.csv`` or ``.jsonl`` file (the column ``text_column``, or ``prompt_column`` and
``response_column``), a Hugging Face dataset (a ``save_to_disk`` folder, or ``.parquet`` /
``.arrow`` / ``.json`` files: its ``train`` split, or its only one), or no path: WordNet's glosses
(``lm_text`` only). ``data.lm.test`` texts (or pairs) are held out before any packing, drawn by a
permutation seeded with ``data.split_seed``, so no held-out text reaches a training block.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator

from kdistill.data.fingerprint import fingerprint_text
from kdistill.data.source import UNLABELLED, Source
from kdistill.data.text import open_text, load_text_file, load_wordnet
from kdistill.data.text_sources import TokenData, teacher_tokenizer
from kdistill.data.rows import jsonl_rows
from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path
from kdistill.recipe.schema import Amount, Section, located
from kdistill.recipe.sources import register_source

BATCH = 1024  # texts a tokenizer call
TEXT_FILES = (".txt", ".text")
DATASET_FILES = (".parquet", ".arrow", ".json")


# -- sources ---------------------------------------------------------------------------------

class LMBlocks(Source):
    """A corpus packed into blocks of ``block_size`` tokens (``lm_text``).

    The texts are tokenised once, in batches, with no special token added by the tokenizer; each
    is followed by the tokenizer's eos token, and all are joined into one token stream held in
    memory as int32 (4 bytes a token: the whole stream, about 1.3 tokens a word of English), then
    cut into ``n_tokens // block_size`` blocks (the tail that fills no block is dropped).

    Args:
        texts: the corpus, one string a document (or line).
        tokenizer: a ``transformers`` tokenizer with an eos token (not kept after tokenising).
        block_size: tokens a block.
        name: what the source is, for messages.
    Fetch: ``(B, 3, block_size)`` int64; the attention mask is all 1, the loss mask 1 except at
    position 0 (a block starts mid-stream, so its first token has no prediction before it).
    """

    def __init__(self, texts: list[str], tokenizer, block_size: int, name: str = "lm_text"):
        self.name, self.block_size, self.texts_count = name, int(block_size), len(texts)
        self.tokenizer_id = _tokenizer_id(tokenizer)
        eos = _eos_id(tokenizer)
        parts = [_stream(ids, eos) for ids in _encode(tokenizer, texts)]
        self.stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)  # (n_tokens,) int32
        self.n_tokens = len(self.stream)
        blocks = self.n_tokens // self.block_size
        if blocks == 0:
            raise KDistillError(f"data.lm.block_size: the {len(texts)} texts of {name} hold {self.n_tokens} tokens, "
                                f"fewer than one block of {self.block_size}; set a smaller data.lm.block_size "
                                "(or give more text).")
        self.y = torch.full((blocks,), UNLABELLED, dtype=torch.long)
        self.num_classes = 0
        self._finish()
        self._fp = None

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        rows = index.cpu().numpy().astype(np.int64)[:, None] * self.block_size + np.arange(self.block_size)
        ids = torch.from_numpy(self.stream[rows].astype(np.int64))  # (B, block_size)
        loss = torch.ones_like(ids)
        loss[:, 0] = 0
        return torch.stack([ids, torch.ones_like(ids), loss], dim=1)  # (B, 3, block_size)

    def fingerprint(self) -> str:
        """A hash of the token stream, the tokenizer and the block size (computed once)."""
        if self._fp is None:
            digest = hashlib.blake2b(self.stream.tobytes(), digest_size=16).hexdigest()
            self._fp = fingerprint_text("lm_text", digest, *self.tokenizer_id, self.block_size)
        return self._fp

    @property
    def tokens(self) -> bool:
        return True


class LMPairs(Source):
    """Prompt/response pairs (``lm_pairs``), each one sample: the prompt, then the response and eos.

    The prompt is wrapped as a user turn by the tokenizer's chat template (with the generation
    prompt) when ``chat_template`` and the tokenizer has one, else taken as it is; prompt and
    response are joined with nothing between them. Only the response's tokens and its eos are
    targets (loss mask 1).

    The pairs are tokenised once, here, into one int32 array (4 bytes a token): the set's longest
    pair must be measured anyway (every batch is padded to it, so teacher outputs line up across
    batches), the chat template runs once, and a fetch is then only slicing, in any worker.

    Truncation to ``max_length``: a prompt longer than half of it loses its start (down to half,
    or to what the response leaves, whichever is longer); the response then loses its end, eos
    included (a cut response does not end). A pair with an empty response is kept out, counted in
    ``dropped``.

    Args:
        prompts, responses: the pairs' texts, as many of each.
        tokenizer: a ``transformers`` tokenizer with an eos token (not kept after tokenising).
        max_length: tokens a pair at most.
        chat_template: wrap the prompts in the tokenizer's chat template when it has one.
    Fetch: ``(B, 3, length)`` int64, right-padded with the tokenizer's pad id (else eos) to
    ``length``, the set's longest pair.
    """

    def __init__(self, prompts: list[str], responses: list[str], tokenizer, max_length: int,
                 chat_template: bool = True, name: str = "lm_pairs"):
        self.name, self.max_length = name, int(max_length)
        self.tokenizer_id = _tokenizer_id(tokenizer)
        self.templated = bool(chat_template and getattr(tokenizer, "chat_template", None))
        eos = _eos_id(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(eos if pad is None else pad)
        kept, prompt_lengths, self.dropped, self.truncated = [], [], 0, 0
        for prompt_ids, response_ids in zip(_encode(tokenizer, _prompt_texts(prompts, tokenizer, self.templated)),
                                            _encode(tokenizer, responses)):
            if not response_ids:
                self.dropped += 1
                continue
            p, r = _truncate(prompt_ids, response_ids + [eos], self.max_length)
            self.truncated += len(p) + len(r) < len(prompt_ids) + len(response_ids) + 1
            kept.append(_stream(p + r, None))
            prompt_lengths.append(len(p))
        if not kept:
            raise KDistillError(f"data: {name} has no pair with a response ({self.dropped} empty); give pairs whose "
                                "response column holds text.")
        self.pairs_count = len(kept)
        self.offsets = np.cumsum([0, *map(len, kept)]).astype(np.int64)  # (N + 1,)
        self.ids = np.concatenate(kept)  # (n_tokens,) int32, the pairs one after another
        self.prompt_lengths = np.asarray(prompt_lengths, dtype=np.int64)  # (N,)
        self.n_tokens = len(self.ids)
        self.length = int(np.diff(self.offsets).max())
        self.y = torch.full((self.pairs_count,), UNLABELLED, dtype=torch.long)
        self.num_classes = 0
        self._finish()
        self._fp = None

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        rows = index.cpu().tolist()
        out = np.zeros((len(rows), 3, self.length), dtype=np.int64)  # (B, 3, length)
        out[:, 0] = self.pad_id
        for b, i in enumerate(rows):
            start, end = self.offsets[i], self.offsets[i + 1]
            n, p = end - start, self.prompt_lengths[i]
            out[b, 0, :n] = self.ids[start:end]
            out[b, 1, :n] = 1
            out[b, 2, max(p, 1):n] = 1
        return torch.from_numpy(out)

    def fingerprint(self) -> str:
        """A hash of the tokens, the prompt lengths, the tokenizer and the lengths (computed once)."""
        if self._fp is None:
            h = hashlib.blake2b(digest_size=16)
            for array in (self.ids, self.offsets, self.prompt_lengths):
                h.update(array.tobytes())
            self._fp = fingerprint_text("lm_pairs", h.hexdigest(), *self.tokenizer_id, self.max_length, self.length)
        return self._fp

    @property
    def tokens(self) -> bool:
        return True


# -- tokenising ------------------------------------------------------------------------------

def _encode(tokenizer, texts: list[str]):
    """The token ids of each of ``texts`` (lists of ints), no special token added, in batches."""
    for i in range(0, len(texts), BATCH):
        # verbose=False: a long document is not a problem here, it is cut into blocks later
        yield from tokenizer(texts[i : i + BATCH], add_special_tokens=False, verbose=False)["input_ids"]


def _stream(ids: list[int], eos: int | None) -> np.ndarray:
    """``ids`` (then ``eos`` when given) as an int32 array."""
    out = np.empty(len(ids) + (eos is not None), dtype=np.int32)
    out[: len(ids)] = ids
    if eos is not None:
        out[-1] = eos
    return out


def _eos_id(tokenizer) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise KDistillError(f"data.lm.tokenizer: {_tokenizer_id(tokenizer)[1] or 'the tokenizer'} has no eos token, "
                            "which ends each text; give a tokenizer that sets eos_token.")
    return int(eos)


def _tokenizer_id(tokenizer) -> tuple[str, str, int]:
    """What names a tokenizer in a fingerprint: its class, folder (or id) and vocabulary size."""
    return type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), len(tokenizer)


def _prompt_texts(prompts: list[str], tokenizer, templated: bool) -> list[str]:
    """The prompts as the model reads them: a user turn and the generation prompt, or as they are."""
    if not templated:
        return list(prompts)
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=False) for p in prompts]


def _truncate(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """(prompt, response) cut to ``max_length`` tokens together: a prompt over half of it loses its
    start (down to half, or to the room the response leaves), then the response loses its end."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    half = max_length // 2
    if len(prompt) > half:
        keep = max(half, max_length - len(response))
        prompt = prompt[len(prompt) - keep :]
    return prompt, response[: max_length - len(prompt)]


# -- reading ---------------------------------------------------------------------------------

def read_columns(path: str | None, columns: dict[str, str], what: str) -> dict[str, list[str]]:
    """The texts of ``columns`` (column name -> the option naming it, e.g. ``data.lm.text_column``)
    in the data at ``path``, one list a column, rows in file order.

    A ``.txt`` file gives its non-blank lines as the one column asked for; a CSV, JSONL or Hugging
    Face dataset gives the named columns (a missing or null value reads ``""``)."""
    if path is None:
        raise KDistillError(f"data.path: {what} needs the file or dataset to read; set data.path=<file>.")
    file = user_path(path, "data.path")
    suffix = file.suffix.lower()
    if file.is_file() and suffix in TEXT_FILES:
        if len(columns) != 1:
            raise KDistillError(f"data.path: {file} is a text file (one text a line), but {what} needs the "
                                f"columns {list(columns)}; give a CSV, JSONL or dataset file.")
        return {next(iter(columns)): load_text_file(file).texts}
    if file.is_file() and suffix == ".csv":
        return _read_csv(file, columns)
    if file.is_file() and suffix == ".jsonl":
        return _read_jsonl(file, columns)
    if file.is_file() and suffix not in DATASET_FILES:
        raise KDistillError(f"data.path: {file} is not a .txt, .csv, .jsonl, .json, .parquet or .arrow file; "
                            "give one of those, or a save_to_disk folder.")
    return _read_dataset(str(file), columns)


def _read_csv(file: Path, columns: dict[str, str]) -> dict[str, list[str]]:
    with open_text(file, "CSV file") as f:
        reader = csv.DictReader(f)
        _need_columns(list(reader.fieldnames or []), columns, file)
        rows = list(reader)
    return {c: [row.get(c) or "" for row in rows] for c in columns}


def _read_jsonl(file: Path, columns: dict[str, str]) -> dict[str, list[str]]:
    with open_text(file, "JSONL file") as f:
        rows = jsonl_rows(f, file, "data.path")
    seen = {key: None for row in rows for key in row}
    _need_columns(list(seen), columns, file)
    return {c: [_as_text(row.get(c), c, file) for row in rows] for c in columns}


def _read_dataset(path: str, columns: dict[str, str]) -> dict[str, list[str]]:
    from kdistill.data.hf_dataset import offline_and_quiet, open_dataset

    with offline_and_quiet():
        (dataset, _, _), _ = open_dataset(path, "train", None, "data.path")
    _need_columns(list(dataset.column_names), columns, path)
    table = dataset.select_columns(list(columns)).with_format("arrow")[:]  # the dataset's row order applied
    return {c: [_as_text(v, c, path) for v in table.column(c).to_pylist()] for c in columns}


def _need_columns(existing: list[str], columns: dict[str, str], name) -> None:
    for column, option in columns.items():
        if column not in existing:
            raise KDistillError(f"{option}: {name} has no column {shown(column)}; its columns are "
                                f"{', '.join(map(repr, existing)) or 'none'}; set {option} to one of them.")


def _as_text(value, column: str, name) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise KDistillError(f"data: {name}'s column {shown(column)} holds {type(value).__name__} values, not text; "
                        "pick a column of strings.")


# -- splitting and loading -------------------------------------------------------------------

def held_out_rows(total: int, test: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of ``total`` texts, each in the original order: ``test`` (a count,
    or a fraction in (0, 1), at least one) drawn by a permutation seeded with ``seed``."""
    if isinstance(test, bool) or not isinstance(test, (int, float)) or (isinstance(test, float) and not 0 < test < 1):
        raise KDistillError(f"data.lm.test: {shown(test)} is neither a count nor a fraction in (0, 1); give e.g. 0.05 "
                            "or 100.")
    n = max(1, round(test * total)) if isinstance(test, float) else int(test)
    if not 0 < n < total:
        raise KDistillError(f"data.lm.test: {test} holds out {n} of the {total} texts; leave at least one text on "
                            f"each side (1..{total - 1}).")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return np.sort(order[n:]), np.sort(order[:n])


def _setup(spec, seed: int | None):
    """(tokenizer, split seed) of a recipe's ``data`` section."""
    from kdistill.data.tokenizer import load_tokenizer

    if spec.lm.tokenizer is None:
        raise KDistillError(f"data.lm.tokenizer: not set; give the folder or model id of the tokenizer that "
                            f"{spec.source} tokenises with (data.lm.tokenizer=<folder>), usually the teacher's.")
    split_seed = spec.split_seed if spec.split_seed is not None else seed if seed is not None else 0
    return load_tokenizer(spec.lm.tokenizer), split_seed


def load_lm_text_source(path: str | None, spec, seed: int | None = None) -> tuple[LMBlocks, LMBlocks]:
    """(train, test) of ``lm_text``: the texts at ``path`` (none: WordNet's glosses), split by text,
    each side packed into blocks. ``spec``: the recipe's ``data`` section; ``seed``: the recipe's
    seed, used when ``data.split_seed`` is not set."""
    lm = spec.lm
    tokenizer, split_seed = _setup(spec, seed)
    if path is None:
        texts = load_wordnet(None, tuple(lm.pos) if isinstance(lm.pos, list) else lm.pos, lm.examples).texts
    else:
        texts = read_columns(path, {lm.text_column: "data.lm.text_column"}, "lm_text")[lm.text_column]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise KDistillError(f"data.path: {path} holds no text in column {shown(lm.text_column)}; give a corpus.")
    train_rows, test_rows = held_out_rows(len(texts), lm.test, split_seed)
    train = LMBlocks([texts[i] for i in train_rows], tokenizer, lm.block_size, name="lm_text")
    try:
        test = LMBlocks([texts[i] for i in test_rows], tokenizer, lm.block_size, name="lm_text (test set)")
    except KDistillError:
        raise KDistillError(f"data.lm.test: the {len(test_rows)} held-out texts fill no block of {lm.block_size} "
                            "tokens; hold out more (data.lm.test) or set a smaller data.lm.block_size.") from None
    return train, test


def load_lm_pairs_source(path: str | None, spec, seed: int | None = None) -> tuple[LMPairs, LMPairs]:
    """(train, test) of ``lm_pairs``: the prompt/response pairs at ``path``, split by pair.
    ``spec``: the recipe's ``data`` section; ``seed``: the recipe's seed, used when
    ``data.split_seed`` is not set."""
    lm = spec.lm
    if path is None:
        raise KDistillError("data.path: lm_pairs needs a CSV, JSONL or dataset of prompt/response pairs; set "
                            "data.path=<file>.")
    tokenizer, split_seed = _setup(spec, seed)
    cols = read_columns(path, {lm.prompt_column: "data.lm.prompt_column",
                               lm.response_column: "data.lm.response_column"}, "lm_pairs")
    prompts, responses = cols[lm.prompt_column], cols[lm.response_column]
    if not prompts:
        raise KDistillError(f"data.path: {path} holds no pairs; give rows with a {shown(lm.prompt_column)} and a "
                            f"{shown(lm.response_column)}.")
    train_rows, test_rows = held_out_rows(len(prompts), lm.test, split_seed)
    made = []
    for rows, name in ((train_rows, "lm_pairs"), (test_rows, "lm_pairs (test set)")):
        made.append(LMPairs([prompts[i] for i in rows], [responses[i] for i in rows], tokenizer, lm.max_length,
                            lm.chat_template, name=name))
    return made[0], made[1]


class LMSpec(Section):
    """``data.lm``: text for causal language models. ``data.path``: a text file (one text a line),
    a CSV or JSONL file, a Hugging Face dataset (a save_to_disk folder or parquet / Arrow files);
    none: WordNet's glosses."""

    KIND = "language-model"
    tokenizer: str | None = Field(None, description="a folder or model id; default the teacher's (args.path)")
    test: Amount = Field(0.05, description="texts (or pairs) held out for evaluation: a count or a fraction")
    pos: str | list[str] = Field("all", description="WordNet (no data.path): which parts of speech")
    examples: bool = Field(True, description="WordNet: the glosses' quoted example sentences too")


class LMData(TokenData):
    """Token sequences for causal language models: no class labels."""

    lm: LMSpec = Field(default_factory=LMSpec, description="data.lm: text for causal language models (tokenizer, held-out texts, sequence length)")

    @model_validator(mode="after")
    def _token_sequences(self) -> "LMData":
        """No classes, no labelled set; WordNet's options only where WordNet is read."""
        if self.classes is not None:
            raise located(("classes",), f"does not apply to source {shown(self.source)}, whose token sequences "
                                        "have no classes; drop data.classes", self.classes)
        if "labelled" in self.model_fields_set and self.labelled:
            raise ValueError(f"labelled applies to class labels, which source {shown(self.source)} has none of; "
                             "drop data.labelled (the held-out texts are data.lm.test)")
        self.labelled = 0
        for name in ("pos", "examples"):
            if name in self.lm.model_fields_set and getattr(self.lm, name) != LMSpec.model_fields[name].default \
                    and self.path is not None:
                raise ValueError(f"data.lm.{name} chooses WordNet's texts, read only when data.path is unset; "
                                 f"drop data.lm.{name}")
        return self

    def with_tokenizer(self, recipe) -> "LMData":
        """This spec with ``data.lm.tokenizer`` set: the recipe's, else the teacher's."""
        tokenizer = self.lm.tokenizer or teacher_tokenizer(recipe)
        if not tokenizer:
            raise KDistillError("data.lm.tokenizer: token sequences need a tokenizer; set it, or give the teacher "
                                "as model: hf_causal with args.path.")
        return self.model_copy(update={"lm": self.lm.model_copy(update={"tokenizer": tokenizer})})


class LMTextSpec(LMSpec):
    block_size: int = Field(128, ge=2, description="tokens a block (texts joined by the eos token, then cut)")
    text_column: str = Field("text", description="the column of a CSV / JSONL / dataset")


class LMTextData(LMData):
    """``lm_text``: a corpus packed into blocks."""

    lm: LMTextSpec = Field(default_factory=LMTextSpec, description="data.lm: text for causal language models (tokenizer, held-out texts, sequence length)")


class LMPairsSpec(LMSpec):
    max_length: int = Field(256, ge=2, description="tokens a pair at most (prompt + response), longer ones cut")
    prompt_column: str = Field("prompt", description="the prompts' column of a CSV / JSONL / dataset")
    response_column: str = Field("response", description="the responses' column of a CSV / JSONL / dataset")
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template when it has one")


class LMPairsData(LMData):
    """``lm_pairs``: prompt/response pairs."""

    lm: LMPairsSpec = Field(default_factory=LMPairsSpec, description="data.lm: text for causal language models (tokenizer, held-out texts, sequence length)")


def load_lm_text_data(spec: LMTextData, recipe=None) -> tuple[LMBlocks, LMBlocks]:
    return load_lm_text_source(spec.path, spec.with_tokenizer(recipe), seed=recipe.seed if recipe else None)


def load_lm_pairs_data(spec: LMPairsData, recipe=None) -> tuple[LMPairs, LMPairs]:
    return load_lm_pairs_source(spec.path, spec.with_tokenizer(recipe), seed=recipe.seed if recipe else None)


register_source("lm_text", LMTextData, tasks=("generate",), loader=load_lm_text_data)
register_source("lm_pairs", LMPairsData, tasks=("generate",), loader=load_lm_pairs_data)
