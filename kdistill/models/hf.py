"""Hugging Face ``transformers`` encoders as sentence-embedding models (``pip install kdistill[text]``).

A sentence embedding is the mean of the last hidden state over the attention mask, then L2
normalised, as sentence-transformers computes it for all-MiniLM-L6-v2. Inputs travel through
kdistill's data pipeline as one integer tensor ``(N, 2, L)``: token ids and attention mask,
stacked, so that text batches are sliced and cached like image batches. Taps name the wrapped
model's modules with the prefix ``model.`` (``model.encoder.layer.1``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from kdistill.data.tokenizer import first_line, import_transformers, load_tokenizer, not_found, resolve_path
from kdistill.errors import KDistillError, shown
from kdistill.models.infer import forward_batches
from kdistill.models.text_encoder_folder import export_sentence_transformer
from kdistill.models.zoo import register

PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_folder(folder: str | Path, what: str = "model 'hf'") -> None:
    """Refuse, before transformers opens anything, a model folder without ``config.json`` or
    whose weights are only pickles (``pytorch_model.bin``): kdistill never unpickles. ``what``
    starts the messages."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise KDistillError(f"{what}: {folder} has no config.json; give the folder the model was saved to "
                            "with save_pretrained (it writes config.json and model.safetensors).")
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
    if pickles:
        raise KDistillError(
            f"{what}: {folder} holds its weights only as a pickle ({pickles[0]}), which kdistill never loads; "
            f"convert them to safetensors once, if you trust the file: transformers.AutoModel.from_pretrained("
            f"'{folder}').save_pretrained('{folder}') writes model.safetensors (safe_serialization=True on "
            "transformers 4).")
    raise KDistillError(f"{what}: {folder} holds no model.safetensors; save the model there with "
                        "save_pretrained.")


def load_config(transformers, folder: str, what: str = "model 'hf'"):
    """The config in ``folder``, or a one-line error naming it."""
    try:
        return transformers.AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as err:
        raise KDistillError(f"{what}: transformers {transformers.__version__} cannot read "
                            f"{Path(folder) / 'config.json'} ({first_line(err).rstrip('.')}); re-save the model "
                            "with save_pretrained, or upgrade transformers for a newer architecture.") from None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden (B, L, H)`` over the positions where ``mask (B, L)`` is 1: ``(B, H)``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class HFEncoder(nn.Module):
    """A ``transformers`` encoder and its tokenizer: packed token tensors in, sentence embeddings out.

    Args:
        model: a ``transformers`` encoder (``AutoModel``) returning ``last_hidden_state``.
        tokenizer: its tokenizer (kept for ``tokenize``/``encode`` and export; not a module).
        max_length: tokens kept per text by ``tokenize``/``encode`` and by the exported folder
            (longer texts are truncated). In a run the data cuts the texts (``data.text.max_length``)
            and the run sets this to the same length, so that the student it writes reproduces it.
        normalize: L2-normalise the embeddings.
        trim: drop, in every batch, the padding columns that no text of the batch uses (faster;
            leave False when taps on hidden states must have one length across batches).
    Inputs: ``(B, 2, L)`` integer tensor, ``[:, 0]`` token ids and ``[:, 1]`` attention mask.
    Output: ``(B, H)`` sentence embeddings.
    """

    layer_stack = "model.encoder.layer"  # the stacked blocks a sub-network keeps some of

    def __init__(self, model: nn.Module, tokenizer=None, max_length: int = 128, normalize: bool = True,
                 trim: bool = True):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.normalize, self.trim = max_length, normalize, trim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0].long(), x[:, 1].long()
        if self.trim:
            used = int(mask.sum(1).max()) if len(mask) else 1
            ids, mask = ids[:, : max(used, 1)], mask[:, : max(used, 1)]
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        emb = mean_pool(hidden, mask)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``texts`` as one ``(N, 2, L)`` int64 tensor, L the longest text (at most ``max_length``)."""
        if self.tokenizer is None:
            raise KDistillError("model 'hf': no tokenizer; give a model folder that holds one.")
        from kdistill.data.text import tokenize_texts

        return tokenize_texts(list(texts), self.tokenizer, self.max_length)

    def encode(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Sentence embeddings of ``texts``: ``(N, H)`` on CPU, in eval mode."""
        if not texts:
            return torch.empty(0, self.model.config.hidden_size)
        device = next(self.parameters()).device
        return forward_batches(self, list(texts), device, batch_size=batch_size, each=lambda out: out.cpu(),
                               transform=lambda batch, where: self.tokenize(batch).to(device))

    def export(self, folder: Path) -> Path | None:
        """Write this encoder beside a run: ``folder/student_hf``, a folder ``transformers.AutoModel``
        and ``sentence_transformers.SentenceTransformer`` load as it is (a resumed run's replaces
        it); nothing for one with pruned attention heads, which a transformers config cannot describe."""
        if getattr(self, "pruned_heads", None):
            return None
        return export_sentence_transformer(self, Path(folder) / "student_hf", overwrite=True)


def set_max_length(model: nn.Module, max_length: int) -> None:
    """Make every ``HFEncoder`` in ``model`` (itself, or the members of an ensemble) cut texts at
    ``max_length`` tokens."""
    for module in model.modules():
        if isinstance(module, HFEncoder):
            module.max_length = max_length


@register("hf")
def hf_encoder(path: str | None = None, config: dict | None = None, tokenizer: str | None = None,
               max_length: int = 128, normalize: bool = True, trim: bool = True) -> HFEncoder:
    """A ``transformers`` encoder from a local folder or model id (``path``), or a fresh one
    built from a ``config`` dict (e.g. ``{model_type: bert, hidden_size: 32, ...}``), with the
    tokenizer of ``tokenizer`` (default: ``path``). ``max_length``: see ``HFEncoder`` (a run
    replaces it by ``data.text.max_length``)."""
    transformers = import_transformers()
    if (path is None) == (config is None):
        raise KDistillError("model 'hf': give exactly one of args.path (a folder or model id) and args.config.")
    try:
        if path is not None:
            model = load_pretrained(transformers, resolve_path(path))
        else:
            config = dict(config)
            model_type = config.pop("model_type", "bert")
            model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(model_type, **config))
    except (OSError, ValueError) as err:
        raise KDistillError(f"model 'hf': cannot load {shown(path)}: {first_line(err)}") from None
    tok = load_tokenizer(tokenizer or path) if (tokenizer or path) else None
    return HFEncoder(model, tok, max_length=max_length, normalize=normalize, trim=trim)


def load_pretrained(transformers, path: str, auto=None, what: str = "model 'hf'"):
    """``from_pretrained`` of the ``auto`` class (default ``AutoModel``) from safetensors only: a
    local folder is checked first (``what`` starts the messages)."""
    auto = auto or transformers.AutoModel
    if not Path(path).is_dir():  # a model id, or a mistyped folder
        try:
            return auto.from_pretrained(path, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise not_found(path, err, what) from None
    check_folder(path, what)
    config = load_config(transformers, path, what)
    try:
        return auto.from_pretrained(path, config=config, use_safetensors=True)
    except SafetensorError as err:
        raise KDistillError(f"{what}: the safetensors weights in {path} cannot be read "
                            f"({first_line(err).rstrip('.')}); save the model there again with "
                            "save_pretrained.") from None
