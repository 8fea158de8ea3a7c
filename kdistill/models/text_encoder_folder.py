"""A text-encoder student as a sentence-transformers folder: ``export_sentence_transformer``
writes a folder that ``transformers.AutoModel`` / ``AutoTokenizer`` and
``sentence_transformers.SentenceTransformer`` both load as they are (the layout of
all-MiniLM-L6-v2: the model and tokenizer at the root, then mean pooling and, when the encoder
normalises, a Normalize module). ``HFEncoder.export`` writes it beside a run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.folder import (
    staged_folder,
    write_json,
    write_sentence_transformer_modules,
)


def _check_exportable(encoder) -> None:
    """Refuse encoders that a transformers folder cannot describe."""
    if getattr(encoder, "pruned_heads", None):
        raise KDistillError(
            f"export: the student keeps {encoder.pruned_heads} attention heads per layer, which a transformers "
            "config cannot describe; build the student with student.from_teacher.heads unset to export it."
        )
    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise KDistillError(f"export: {type(encoder).__name__} is not a text encoder (model: hf); "
                            "only HFEncoder models export as a sentence-transformers folder.")
    if getattr(encoder, "tokenizer", None) is None:
        raise KDistillError("export: the encoder has no tokenizer; build it with model.args.tokenizer "
                            "(a folder holding one) to export it.")
    _check_matches_config(model)


def _check_matches_config(model: nn.Module) -> None:
    """Refuse a model whose weights differ in names or shapes from a fresh model of its config
    (it would not reload), comparing against a weightless copy built on the meta device."""
    try:
        with torch.device("meta"):
            fresh = type(model)(copy.deepcopy(model.config))  # a copy: init may edit its config
    except Exception:  # noqa: BLE001  (a class we cannot rebuild this way: skip the check, reloading decides)
        return
    ours, theirs = model.state_dict(), fresh.state_dict()
    missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    wrong = [k for k in ours if k in theirs and ours[k].shape != theirs[k].shape]
    if missing or extra or wrong:
        raise KDistillError(
            f"export: the model's weights do not fit its own config (missing {missing[:2]}, extra {extra[:2]}, "
            f"wrong shape {wrong[:2]}), so it would not reload; shrink students with student.from_teacher, "
            "which keeps the config in step."
        )


def _write_sentence_transformer_files(folder: Path, hidden_size: int, max_length: int, normalize: bool) -> None:
    """The modules.json, pooling and config files that sentence-transformers reads."""
    write_sentence_transformer_modules(folder, [("", "Transformer"), ("1_Pooling", "Pooling")], normalize)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})


def _tokenizer_cut_at(tokenizer, max_length: int):
    """A copy of ``tokenizer`` that truncates at ``max_length`` tokens wherever a user's code asks it
    to truncate without naming a length: transformers' ``truncation=True`` reads
    ``model_max_length``; the ``tokenizers`` library reads the truncation saved in
    ``tokenizer.json`` (the copy's, not whatever the last call of the original left there)."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = max_length
    if "max_length" in getattr(tokenizer, "init_kwargs", {}):  # tokenizer_config.json's copy of a call default
        tokenizer.init_kwargs["max_length"] = max_length
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer's tokenizer.json
    if backend is not None:
        backend.enable_truncation(max_length)
        backend.no_padding()  # a fixed length left by the last padded call is no part of the model
    return tokenizer


def export_sentence_transformer(encoder: nn.Module, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``encoder`` as a folder that ``transformers.AutoModel``/``AutoTokenizer`` and
    ``sentence_transformers.SentenceTransformer`` load, giving the same embeddings.

    Texts are cut at ``encoder.max_length`` tokens, as in the run that trained it (a run sets it to
    ``data.text.max_length``): the folder's ``sentence_bert_config.json`` (``max_seq_length``),
    its tokenizer's ``model_max_length`` and the truncation in ``tokenizer.json`` all say so.

    Args:
        encoder: an ``HFEncoder`` (model: hf), e.g. a trained sub-network student. Head-pruned
            students are refused (a transformers config cannot describe them).
        out_dir: the folder to create; written as ``<out_dir>.incomplete`` and renamed at the end.
        overwrite: replace an existing non-empty ``out_dir``.
    Returns: the folder's path.
    """
    _check_exportable(encoder)
    config = encoder.model.config
    hidden_size = getattr(config, "hidden_size", None)
    if not isinstance(hidden_size, int):
        raise KDistillError(f"export: the model config ({type(config).__name__}) has no hidden_size; "
                            "only encoders with a hidden_size export as a sentence-transformers folder.")
    out_dir = Path(out_dir)
    with staged_folder(out_dir, overwrite) as staging:
        encoder.model.save_pretrained(staging)
        _tokenizer_cut_at(encoder.tokenizer, encoder.max_length).save_pretrained(staging)
        _write_sentence_transformer_files(staging, hidden_size, encoder.max_length, encoder.normalize)
    return out_dir


# --------------------------------------------------------------------------- ONNX
