"""A static-embedding sentence encoder: one vector a token, averaged, no attention.

The fastest sentence encoder there is: a table of token vectors over the teacher's own
vocabulary, the mean of a text's token vectors, then L2 normalisation. It starts from a
sentence-encoder teacher the way model2vec (MinishLab, github.com/MinishLab/model2vec,
``model2vec/distill``, version 0.10) distils one, then trains like any student:

1. **Each token through the teacher.** The input of token ``t`` is the one-token text as the
   teacher's tokenizer frames it (``[CLS] t [SEP]`` for BERT), as model2vec forms it from the
   tokenizer's leading and trailing special tokens; its vector is the teacher's output for it
   (the mean of the last hidden state over those positions, as model2vec's mean pooling takes
   it, and unit length when the teacher normalises, where model2vec keeps the norm).
2. **PCA to the student's width**, fitted on those vectors (centred; the top ``width``
   components). At the teacher's own width there is no PCA: the vectors stay in the teacher's
   space, so that cosine to the teacher means what it says.
3. **Weights by token rank** (model2vec 0.10's ``compute_weights``: SIF weighting with a
   Zipf-estimated frequency, not log-rank Zipf): the token of rank ``r`` (its place among the
   kept tokens in the tokenizer's id order, from 1) has estimated frequency
   ``p_r = (1 / (r + 1)) / sum_{k=1..n} 1 / (k + 1)`` and weight ``w_r = a / (a + p_r)``,
   ``a`` the SIF coefficient (1e-4); each token's vector is multiplied by its weight after the PCA.

The special tokens (``[CLS]``, ``[SEP]``, padding, ``[UNK]``) and the tokens matching
``skip_tokens`` (BERT's ``[unusedN]``, as model2vec removes them) are kept out: their rows are
zero and the mean skips them, as model2vec skips the special tokens it never adds and the
unknown token it drops.

Inputs are the teacher's: token ids and attention mask packed ``(B, 2, L)``, as for the other
text students. The fixed map from the teacher's space into the student's (the same PCA,
``teacher_projection``) gives the teacher feature ``projected`` (``objective.projected``) that
the embedding losses compare the student with.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdistill import progress
from kdistill.errors import KDistillError, shown
from kdistill.models.infer import eval_mode
from kdistill.models.projection import fit_pca
from kdistill.models.static_folder import export_static
from kdistill.models.zoo import register

SKIP_TOKENS = r"\[unused\d+\]"  # BERT's placeholder tokens, which no text produces


class ToStudentSpace(nn.Module):
    """The fixed map from the teacher's embeddings into a static student's: ``(B, H) -> (B, D)``,
    ``(t - mean) @ components``, then L2 normalised when the student normalises. Its buffers are
    not saved with the student (the student rebuilds them from the teacher)."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, normalize: bool = True):
        super().__init__()
        self.register_buffer("mean", mean.float(), persistent=False)  # (H,)
        self.register_buffer("components", components.float(), persistent=False)  # (H, D)
        self.normalize = normalize

    def forward(self, teacher_emb: torch.Tensor) -> torch.Tensor:
        out = (teacher_emb.float() - self.mean) @ self.components  # (B, D)
        return F.normalize(out, dim=-1) if self.normalize else out


class StaticEncoder(nn.Module):
    """Token vectors, averaged over a text's tokens, then L2 normalised.

    Args:
        vectors: ``(V, D)``, one row per token id of ``tokenizer`` (trained).
        tokenizer: the teacher's tokenizer (for ``tokenize``/``encode`` and export; not a module).
        counted: ``(V,)``, 1 for the tokens the mean counts, 0 for the rest (special tokens).
        projection: the teacher's embeddings into this space (``ToStudentSpace``); default identity.
        normalize: L2-normalise the embeddings.
    Inputs: ``(B, 2, L)`` integer tensor, ``[:, 0]`` token ids and ``[:, 1]`` attention mask.
    Output: ``(B, D)`` sentence embeddings; a text without a counted token gives zeros.
    """

    def __init__(self, vectors: torch.Tensor, tokenizer=None, counted: torch.Tensor | None = None,
                 projection: ToStudentSpace | None = None, normalize: bool = True):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(vectors.float(), freeze=False)
        counted = torch.ones(len(vectors)) if counted is None else counted
        self.register_buffer("counted", counted.float(), persistent=False)  # (V,), rebuilt, never trained
        width = vectors.shape[1]
        self.teacher_projection = projection or ToStudentSpace(torch.zeros(width), torch.eye(width), normalize)
        self.tokenizer, self.normalize = tokenizer, normalize
        self._plain_backend = self._counted_ids = None  # made on the first encode
        self._specials_counted = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0].long()  # (B, L)
        weights = x[:, 1].to(self.counted.dtype) * self.counted[ids]  # (B, L): the tokens the mean counts
        summed = (self.embedding(ids) * weights.unsqueeze(-1)).sum(1)  # (B, D)
        emb = summed / weights.sum(1, keepdim=True).clamp_min(1.0)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def export(self, folder: Path) -> Path:
        """Write this student beside a run: ``folder/student_static``, a folder model2vec and
        sentence-transformers load (``models/static_folder.py``); a resumed run's replaces it."""
        return export_static(self, Path(folder) / "student_static", overwrite=True)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``texts`` as one ``(N, 2, L)`` int64 tensor, L the longest text: never truncated (a
        static model reads any length; training texts are cut at ``data.text.max_length``)."""
        if self.tokenizer is None:
            raise KDistillError("model 'static': no tokenizer; build it from a teacher that has one.")
        enc = self.tokenizer(list(texts), padding=True, truncation=False, return_tensors="pt", verbose=False)
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Sentence embeddings of ``texts``: ``(N, D)`` on the CPU; equal to the model's output (in
        eval mode) on ``tokenize(texts)``. With a fast tokenizer the texts are not padded: its Rust
        backend tokenises a batch and each text's rows are summed where they lie (``_bag``)."""
        device = self.embedding.weight.device
        backend = self._backend()
        batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        if backend is not None:
            parts = [self._bag(backend, batch, device).float().cpu() for batch in batches]
        else:
            with eval_mode(self):
                parts = [self(self.tokenize(batch).to(device)).float().cpu() for batch in batches]
        return torch.cat([torch.empty(0, self.embedding.embedding_dim), *parts])

    def _backend(self):
        """The fast tokenizer's backend without truncation or padding (a copy made once), or None."""
        if self._plain_backend is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is None:
                return None
            from tokenizers import Tokenizer

            plain = Tokenizer.from_str(backend.to_str())
            plain.no_truncation()
            plain.no_padding()
            self._plain_backend = plain
        return self._plain_backend

    def _bag(self, backend, texts: list[str], device) -> torch.Tensor:
        """The model's output on ``texts`` from their unpadded token ids: ``(B, D)``. On the CPU in
        numpy (for a few hundred rows, no thread pool is worth waking); elsewhere one ``embedding_bag``."""
        if self._counted_ids is None:  # the ids the mean counts, as a Python set (rebuilt once)
            self._counted_ids = set(torch.nonzero(self.counted).flatten().tolist())
            specials = getattr(self.tokenizer, "all_special_ids", None) or []
            self._specials_counted = any(i in self._counted_ids for i in specials)
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no character offsets
        # special tokens the mean skips (as built from a teacher) are left out of the tokenizer's work
        encodings = encode(texts, add_special_tokens=self._specials_counted)
        kept = [[i for i in e.ids if i in self._counted_ids] for e in encodings]
        lengths = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
        flat = np.fromiter(itertools.chain.from_iterable(kept), dtype=np.int64, count=int(lengths.sum()))
        table = self.embedding.weight.detach()
        if table.device.type != "cpu" or table.dtype != torch.float32:  # numpy: float32 on the CPU only
            offsets = torch.from_numpy(np.cumsum(lengths) - lengths).to(device)
            emb = F.embedding_bag(torch.from_numpy(flat).to(device), table, offsets, mode="mean")  # empty: zeros
            return F.normalize(emb, dim=-1) if self.normalize else emb
        sums = np.zeros((len(kept), table.shape[1]), dtype=np.float32)
        filled = lengths > 0  # each filled text's rows run from its start to the next filled text's
        if filled.any():
            sums[filled] = np.add.reduceat(table.numpy()[flat], (np.cumsum(lengths) - lengths)[filled], axis=0)
        emb = sums / np.maximum(lengths, 1)[:, None]
        if self.normalize:  # as F.normalize: divided by max(norm, 1e-12)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return torch.from_numpy(emb)


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The token ids ``tokenizer`` puts before and after a text's own ([CLS] and [SEP] for BERT,
    nothing for GPT-2), found by encoding a short text with and without them."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(inner) + 1):
        if inner and full[start : start + len(inner)] == inner:
            return full[:start], full[start + len(inner):]
    raise KDistillError(f"model 'static': cannot tell which special tokens the teacher's tokenizer "
                        f"({type(tokenizer).__name__}) adds around a text; use a teacher with a Hugging Face "
                        "tokenizer.")


def kept_tokens(tokenizer, skip_tokens: str | None) -> tuple[torch.Tensor, int]:
    """(ids of the tokens a static student keeps, in id order; the size of the id range). Kept:
    every token but the special ones and those whose whole text matches ``skip_tokens``."""
    vocab = tokenizer.get_vocab()  # {token: id}, added tokens included
    try:
        pattern = re.compile(skip_tokens) if skip_tokens else None
    except re.error as err:
        raise KDistillError(f"student.args.skip_tokens: {shown(skip_tokens)} is not a regular expression ({err}); "
                            r"give one such as '\[unused\d+\]', or null to keep every token.") from None
    special = set(tokenizer.all_special_ids)
    ids = sorted(i for token, i in vocab.items()
                 if i not in special and not (pattern is not None and pattern.fullmatch(token)))
    return torch.tensor(ids, dtype=torch.long), max(vocab.values()) + 1


@torch.no_grad()
def teacher_token_vectors(teacher: nn.Module, ids: torch.Tensor, prefix: list[int], suffix: list[int],
                          batch_size: int = 512) -> torch.Tensor:
    """The teacher's output for each token of ``ids`` as a one-token text
    (``prefix + [id] + suffix``): ``(N,) -> (N, H)`` float32 on the CPU, in batches, with a
    progress bar (``kdistill.progress``) when the pass takes more than a few seconds."""
    before, after = (torch.tensor(part, dtype=torch.long).expand(len(ids), len(part)) for part in (prefix, suffix))
    tokens = torch.cat([before, ids.unsqueeze(1), after], dim=1)  # (N, L): e.g. [CLS] t [SEP]
    packed = torch.stack([tokens, torch.ones_like(tokens)], dim=1)  # (N, 2, L): ids, mask
    device = next(iter(teacher.parameters()), torch.empty(0)).device
    parts = []
    with eval_mode(teacher), progress.bar(len(ids), "static student: teacher over its vocabulary", " tokens") as bar:
        for chunk in packed.split(batch_size):
            out = teacher(chunk.to(device))
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise KDistillError(f"model 'static': the teacher outputs {shape} for a batch of texts, not one "
                                    "embedding a text (B, H); build a static student from a sentence encoder "
                                    "(model: hf).")
            parts.append(out.float().cpu())
            bar.update(len(chunk))
    return torch.cat(parts)


def zipf_sif_weights(n: int, sif_coefficient: float | None) -> torch.Tensor:
    """SIF weights of ``n`` tokens ranked 1..n, their frequency estimated by Zipf's law:
    ``w_r = a / (a + p_r)``, ``p_r = (1 / (r + 1)) / sum_k 1 / (k + 1)`` (``(n,)``, float64);
    all ones when ``sif_coefficient`` is None."""
    if sif_coefficient is None:
        return torch.ones(n, dtype=torch.float64)
    inverse_rank = 1.0 / torch.arange(2, n + 2, dtype=torch.float64)
    frequency = inverse_rank / inverse_rank.sum()
    return sif_coefficient / (sif_coefficient + frequency)


def static_vectors(token_vectors: torch.Tensor, width: int, sif_coefficient: float | None,
                   normalize: bool = True) -> tuple[torch.Tensor, ToStudentSpace]:
    """Token vectors ``(N, H)`` (in rank order) to a static student's rows ``(N, width)`` and the
    map from the teacher's space into the student's: a PCA to ``width`` (none when ``width == H``),
    then each row times its SIF weight (``zipf_sif_weights``)."""
    dim = token_vectors.shape[1]
    if width < dim:
        pca = fit_pca(token_vectors, width)
        projection = ToStudentSpace(pca.mean, pca.components, normalize)
    else:
        projection = ToStudentSpace(torch.zeros(dim), torch.eye(dim), normalize)
    rows = (token_vectors.float() - projection.mean) @ projection.components  # (N, width)
    weights = zipf_sif_weights(len(token_vectors), sif_coefficient)
    return (rows.double() * weights.unsqueeze(1)).float(), projection


def _check_args(width, teacher_width: int, kept: int, sif_coefficient) -> int:
    """The student's width, once ``width`` and ``sif_coefficient`` are known to be sound."""
    if sif_coefficient is not None and (isinstance(sif_coefficient, bool) or not 0 < sif_coefficient < 1):
        raise KDistillError(f"student.args.sif_coefficient: {shown(sif_coefficient)} is not in (0, 1); give e.g. 1e-4 "
                            "(model2vec's default), or null for no weighting.")
    if width is None:
        return teacher_width
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise KDistillError(f"student.args.width: {shown(width)} is not a positive whole number; give e.g. 256, or "
                            f"leave it out for the teacher's width ({teacher_width}).")
    if width > teacher_width:
        raise KDistillError(f"student.args.width: {width} is wider than the teacher's embeddings ({teacher_width}); "
                            f"give at most {teacher_width}, or leave it out for {teacher_width}.")
    if width < teacher_width and width >= kept:
        raise KDistillError(f"student.args.width: {width} needs a PCA of more vectors than the {kept} tokens the "
                            f"teacher's vocabulary keeps (at most {kept - 1} components); give at most {kept - 1}.")
    return width


@register("static")
def static_encoder(teacher: nn.Module | None = None, width: int | None = None,
                   sif_coefficient: float | None = 1e-4, skip_tokens: str | None = SKIP_TOKENS,
                   normalize: bool = True, batch_size: int = 512) -> StaticEncoder:
    """A static-embedding student built from a sentence-encoder ``teacher`` (module docstring).

    Args:
        teacher: the teacher (a text encoder with a ``tokenizer``, such as ``model: hf``); the
            builder gets it from the run, built and loaded first.
        width: the embedding width, at most the teacher's; None: the teacher's width (no PCA).
        sif_coefficient: ``a`` of the SIF weights (model2vec's default 1e-4); None: no weighting.
        skip_tokens: a regular expression; the tokens whose text matches it are left out
            (default BERT's ``[unusedN]``); None keeps every token but the special ones.
        normalize: L2-normalise the embeddings.
        batch_size: tokens a batch of the teacher's pass over the vocabulary.
    """
    if teacher is None:
        raise KDistillError("student model 'static': it is built from the teacher's vocabulary, but the recipe has "
                            "no teacher; add one (a sentence encoder, model: hf), or pass teacher= from Python.")
    tokenizer = getattr(teacher, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        raise KDistillError(f"student model 'static': the teacher ({type(teacher).__name__}) has no tokenizer to "
                            "share; build it from a text encoder that has one (model: hf with a path).")
    ids, size = kept_tokens(tokenizer, skip_tokens)
    if not len(ids):
        raise KDistillError(f"student.args.skip_tokens: {shown(skip_tokens)} leaves none of the teacher's tokens; "
                            "give a narrower pattern, or null.")
    prefix, suffix = special_frame(tokenizer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise KDistillError(f"student.args.batch_size: {shown(batch_size)} is not a positive whole number; give e.g. 512.")
    outputs = teacher_token_vectors(teacher, ids[:1], prefix, suffix)  # one token first: the width, cheaply
    width = _check_args(width, outputs.shape[1], len(ids), sif_coefficient)
    outputs = teacher_token_vectors(teacher, ids, prefix, suffix, batch_size)  # (N, H)
    rows, projection = static_vectors(outputs, width, sif_coefficient, normalize)
    vectors = torch.zeros(size, width)
    vectors[ids] = rows
    counted = torch.zeros(size)
    counted[ids] = 1.0
    return StaticEncoder(vectors, tokenizer, counted, projection, normalize)
