"""A static-embedding student (``models.static``; ``StaticEncoder.export`` writes it beside a run) as one folder that both model2vec
(``StaticModel.from_pretrained``) and sentence-transformers (``SentenceTransformer``) load.

The layout is model2vec's own (``model2vec/persistence``, version 0.10), which
sentence-transformers reads through its ``StaticEmbedding`` module:

- ``model.safetensors``: ``embeddings``, the token vectors ``(V, D)`` float32, one row per id of
  the tokenizer; the rows of the tokens the student does not count (special tokens) are zero;
- ``tokenizer.json``: the teacher's tokenizer (``tokenizers`` format), without truncation or
  padding: both libraries encode a text without special tokens, whole;
- ``config.json``: model2vec's config (``normalize``, ``max_length: null``: no truncation);
- ``modules.json`` (``StaticEmbedding`` at the root, then ``Normalize`` when the student
  normalises) and ``config_sentence_transformers.json``: sentence-transformers' files.

Both give the student's embeddings. model2vec drops the unknown token from a text's mean and
sentence-transformers counts it with its zero row, which the final L2 normalisation cancels:
only a student that does not normalise differs there.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.folder import (
    staged_folder,
    write_json,
    write_sentence_transformer_modules,
)


def _backend_tokenizer(encoder: nn.Module):
    """A copy of the student's tokenizer as a ``tokenizers.Tokenizer`` that neither truncates nor pads."""
    from tokenizers import Tokenizer

    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise KDistillError(f"export: the static student's tokenizer ({type(encoder.tokenizer).__name__}) has no "
                            "tokenizer.json form (a fast tokenizer); build the student from a teacher whose folder "
                            "holds tokenizer.json.")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def export_static(encoder: nn.Module, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``encoder`` as a folder that ``model2vec.StaticModel.from_pretrained`` and
    ``sentence_transformers.SentenceTransformer`` load, giving its embeddings (module docstring).

    Args:
        encoder: a ``StaticEncoder`` (model: static).
        out_dir: the folder to create; written as ``<out_dir>.incomplete`` and renamed at the end.
        overwrite: replace an existing non-empty ``out_dir``.
    Returns: the folder's path.
    """
    if not all(hasattr(encoder, n) for n in ("embedding", "counted", "tokenizer", "normalize")):
        raise KDistillError(f"export: {type(encoder).__name__} is not a static-embedding student (model: static); "
                            "only those export as a model2vec folder.")
    tokenizer = _backend_tokenizer(encoder)
    vectors = (encoder.embedding.weight.detach().float() * encoder.counted.unsqueeze(1)).cpu().contiguous()  # (V, D)
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(vectors):
        raise KDistillError(f"export: the static student has {len(vectors)} token vectors but its tokenizer "
                            f"{tokenizer.get_vocab_size(with_added_tokens=True)} tokens; rebuild it from its teacher.")
    out_dir = Path(out_dir)
    with staged_folder(out_dir, overwrite) as staging:
        save_file({"embeddings": vectors}, str(staging / "model.safetensors"))
        tokenizer.save(str(staging / "tokenizer.json"))
        write_json(staging / "config.json", {
            "model_type": "model2vec", "architectures": ["StaticModel"],
            "tokenizer_name": str(getattr(encoder.tokenizer, "name_or_path", "")),
            "hidden_dim": int(vectors.shape[1]), "normalize": bool(encoder.normalize), "max_length": None,
            "embedding_dtype": "float32"})
        write_sentence_transformer_modules(staging, [(".", "StaticEmbedding")], encoder.normalize)
    return out_dir
