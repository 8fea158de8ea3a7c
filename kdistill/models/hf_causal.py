"""Hugging Face causal language models as kdistill models (``pip install kdistill[text]``),
sub-networks cut from them, and their export as ``transformers`` folders.

A batch of LM inputs is one int64 tensor ``(B, 3, L)``: ``[:, 0]`` token ids, ``[:, 1]``
attention mask (1 = real token, 0 = right padding), ``[:, 2]`` loss mask (1 where token t is a
prediction target, i.e. the prediction made at position t-1 counts). ``(B, 2, L)`` (ids,
attention) and ``(B, L)`` (ids only) are accepted too. The model's output is the final hidden
state ``(B, L, d)``, what the LM head reads; ``output_head()`` gives that head, so a loss can
form logits itself (chunked over a large vocabulary). Taps name the wrapped model's modules
with the prefix ``model.`` (``model.model.layers.1``, ``model.transformer.h.1``).

Sub-networks follow Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning
and Knowledge Distillation", arXiv:2407.14679): drop the contiguous block of layers whose
removal changes the next-token distributions least, and keep the attention heads and MLP
units with the largest activations on a calibration batch.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.data.lm_batch import prediction_mask, split_inputs
from kdistill.data.tokenizer import first_line, import_transformers, load_tokenizer, resolve_path
from kdistill.errors import KDistillError, shown
from kdistill.models.decoder_arch import FRESH_MODEL_TYPE, Arch, arch_of
from kdistill.models.hf import check_folder, load_config, load_pretrained
from kdistill.models.subnet import pick_layers, prune_linear, set_module, sub_network
from kdistill.models.taps import resolve_module
from kdistill.models.zoo import register
from kdistill.paths import no_links

WHAT = "model 'hf_causal'"
PER_LAYER = ("layer_types", "no_rope_layers")  # config lists holding one entry per decoder layer


def find_layer_stack(model: nn.Module, n_layers: int) -> str:
    """Dotted path in ``model`` of its decoder layers: the ``nn.ModuleList`` of ``n_layers`` modules
    holding the most parameters."""
    stacks = [(sum(p.numel() for p in m.parameters()), name) for name, m in model.named_modules()
              if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if not stacks:
        raise KDistillError(f"{WHAT}: no nn.ModuleList of {n_layers} decoder layers (config.num_hidden_layers) "
                            f"in {type(model).__name__}; this architecture is not supported.")
    return max(stacks)[1]


class CausalLM(nn.Module):
    """A ``transformers`` causal LM and its tokenizer: packed token tensors in, final hidden states out.

    Args:
        model: an ``AutoModelForCausalLM`` model.
        tokenizer: its tokenizer (kept for generation and export; not a module).
    Inputs: ``(B, 3, L)``, ``(B, 2, L)`` or ``(B, L)`` int64 (see the module docstring).
    Output: ``(B, L, d)`` hidden states after the final norm.
    """

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.layer_stack = "model." + find_layer_stack(model, model.config.num_hidden_layers)

    @property
    def config(self):
        return self.model.config

    @property
    def vocab_size(self) -> int:
        return self.output_head()[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, attention = split_inputs(x)
        decoder = self.model.get_decoder()
        return decoder(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state  # (B, L, d)

    def output_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output projection's live parameters: weight ``(V, d)`` and bias ``(V,)`` or None."""
        head = self.model.get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Full next-token logits ``(B, L, V)`` (small evaluations; losses use ``output_head``)."""
        ids, attention = split_inputs(x)
        return self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits

    def export(self, folder: Path) -> Path:
        """Write this model beside a run: ``folder/student_hf``, which ``AutoModelForCausalLM`` and
        its tokenizer load (``export_causal_lm``)."""
        return export_causal_lm(self, Path(folder) / "student_hf")

    def cut(self, spec, calib: torch.Tensor | None) -> "CausalLM":
        """The sub-network a recipe's ``student.from_teacher`` (``SubnetSpec``) describes, started
        from these weights: decoder layers kept (``keep``, or ``layers`` picked ``even`` /
        ``first_last`` / ``first`` / ``block``: the contiguous block whose removal changes the
        predictions on ``calib`` least), then fewer heads or MLP units ranked by their activations
        on ``calib`` (a batch of inputs ``(B, 3, L)``)."""
        n = len(resolve_module(self, self.layer_stack))
        if isinstance(spec.keep, dict):
            raise KDistillError(f"{WHAT}: student.from_teacher.keep: give the kept decoder layers as a list "
                                f"of indices 0..{n - 1}.")
        if spec.keep is not None:
            kept = sorted(spec.keep)
        elif spec.pick == "block":
            kept = rank_block_drop(self, calib, spec.layers)
        else:
            kept = pick_layers(n, spec.layers, spec.pick)
        student = sub_network(self, kept)
        fix_after_layer_cut(student, kept)
        if spec.heads is not None or spec.ffn is not None:
            prune_width(student, calib, heads=spec.heads, ffn=spec.ffn)
        student.kept_layers = kept
        return student

    def generate(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """``self.model.generate``: prompt ids ``(B, L)`` (left padded) in, ``(B, L + new)`` out."""
        return self.model.generate(input_ids=ids, attention_mask=attention_mask, **kw)


@register("hf_causal")
def hf_causal(path: str | None = None, config: dict | None = None, tokenizer: str | None = None) -> CausalLM:
    """A causal LM from a local folder or offline model id (``path``, safetensors only), or a fresh
    random one built from a ``config`` dict (``{model_type: llama, hidden_size: 64, ...}``), with
    the tokenizer of ``tokenizer`` (default: ``path``)."""
    transformers = import_transformers()
    if (path is None) == (config is None):
        raise KDistillError(f"{WHAT}: give exactly one of args.path (a folder or model id) and args.config.")
    try:
        model = _load(transformers, resolve_path(path, WHAT)) if path is not None else _fresh(transformers, config)
    except (OSError, ValueError) as err:
        raise KDistillError(f"{WHAT}: cannot load {shown(path or config)}: {first_line(err)}") from None
    tok = load_tokenizer(tokenizer or path) if (tokenizer or path) else None
    return CausalLM(model, tok)


def _load(transformers, where: str):
    if Path(where).is_dir():
        check_folder(where, WHAT)
        _check_causal(transformers, load_config(transformers, where, WHAT), where)
    return load_pretrained(transformers, where, auto=transformers.AutoModelForCausalLM, what=WHAT)


def _fresh(transformers, config: dict):
    config = dict(config)
    model_type = config.pop("model_type", FRESH_MODEL_TYPE)
    built = transformers.AutoConfig.for_model(model_type, **config)
    _check_causal(transformers, built, f"config of model_type {shown(model_type)}")
    return transformers.AutoModelForCausalLM.from_config(built)


def _check_causal(transformers, config, where: str) -> None:
    if type(config) not in transformers.AutoModelForCausalLM._model_mapping:
        raise KDistillError(f"{WHAT}: {where} describes a {shown(config.model_type)} model, which is not a causal "
                            "language model; give a decoder LM (gpt2, llama, qwen2, ...), or use model: hf for "
                            "text encoders.")


def _cut_config(config, kept: list[int]) -> None:
    """Set the layer count and the per-layer config lists to the ``kept`` layers."""
    config.num_hidden_layers = len(kept)  # GPT-2: n_layer, through its attribute map
    for name in PER_LAYER:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and len(value) != len(kept) and len(value) > max(kept):
            setattr(config, name, [value[i] for i in kept])


def fix_after_layer_cut(student: CausalLM, kept: list[int]) -> None:
    """Make a causal LM whose layer stack ``sub_network`` cut to the layers ``kept`` (of the teacher)
    consistent: the layer count, per-layer config lists (``layer_types``) and each layer's
    ``layer_idx`` (which the KV cache of ``generate`` indexes by), renumbered 0..k-1."""
    layers = resolve_module(student, student.layer_stack)
    kept = sorted(kept)
    if len(layers) != len(kept):
        raise KDistillError(f"fix_after_layer_cut: the student has {len(layers)} layers but kept names {len(kept)} "
                            f"({kept}); pass the indices given to sub_network.")
    config = student.model.config
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise KDistillError("fix_after_layer_cut: this GPT-2 scales attention by 1 / (layer index + 1) "
                            "(scale_attn_by_inverse_layer_idx), so a cut changes it; cut a model without it.")
    _cut_config(config, kept)
    for new, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new


@contextmanager
def _cut_view(model: CausalLM, kept: list[int]):
    """The model with only the layers ``kept``, shared (not copied), restored on exit. Without a KV
    cache the layers' ``layer_idx`` is not read, so it stays."""
    stack, config = resolve_module(model, model.layer_stack), model.model.config
    saved = {name: getattr(config, name) for name in ("num_hidden_layers", *PER_LAYER) if hasattr(config, name)}
    set_module(model, model.layer_stack, nn.ModuleList([stack[i] for i in kept]))
    try:
        _cut_config(config, kept)
        yield model
    finally:
        set_module(model, model.layer_stack, stack)
        for name, value in saved.items():
            setattr(config, name, value)


def _log_probs(model: CausalLM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities ``(N, V)`` at the ``N`` positions of ``mask (B, L)``."""
    return F.log_softmax(model.logits(x)[mask].float(), dim=-1)


def rank_block_drop(model: CausalLM, calib: torch.Tensor, keep: int) -> list[int]:
    """Minitron depth pruning (Muralidharan et al. 2024, arXiv:2407.14679): of all ways to drop one
    contiguous block of ``n - keep`` layers, the one whose removal changes the next-token
    distributions on ``calib`` least, by the mean KL(full || cut) over the loss-masked positions.

    Args:
        calib: a calibration batch ``(B, 3, L)`` (or ``(B, 2, L)``, ``(B, L)``).
        keep: layers to keep, 1..n.
    Returns: the kept layer indices, sorted. The model is left as it was.
    """
    n = len(resolve_module(model, model.layer_stack))
    if not 1 <= keep <= n:
        raise KDistillError(f"rank_block_drop: cannot keep {keep} of {n} layers; keep between 1 and {n}.")
    drop, was_training = n - keep, model.training
    calib = calib.to(model.output_head()[0].device)
    mask = prediction_mask(calib)
    if not mask.any():
        raise KDistillError("rank_block_drop: the calibration batch has no loss-masked positions; give token "
                            "sequences of at least two tokens.")
    scores = {}
    model.eval()
    try:
        with torch.no_grad():
            full = _log_probs(model, calib, mask)  # (N, V)
            for start in range(n - drop + 1) if drop else []:
                with _cut_view(model, _without(n, start, drop)) as cut:
                    scores[start] = (full.exp() * (full - _log_probs(cut, calib, mask))).sum(-1).mean().item()
    finally:
        model.train(was_training)
    return _without(n, min(scores, key=scores.get), drop) if scores else list(range(n))


def _without(n: int, start: int, drop: int) -> list[int]:
    return [i for i in range(n) if not start <= i < start + drop]


def _units(indices: torch.Tensor, size: int) -> torch.Tensor:
    """The rows of the blocks ``indices`` of ``size`` rows each: ``(len(indices) * size,)``."""
    return (indices.unsqueeze(1) * size + torch.arange(size, device=indices.device)).flatten()


def _activations(model: CausalLM, calib: torch.Tensor, arch: Arch) -> tuple[list, list]:
    """Per layer, over the calibration tokens: mean |input| of the MLP's output projection, one per
    unit ``(ffn,)``; and the summed norm of each query head's slice of the attention output
    projection's input ``(heads,)`` (layers whose heads can be pruned, ``Arch.heads_out``, else None)."""
    layers, heads = resolve_module(model, model.layer_stack), model.config.num_attention_heads
    real = split_inputs(calib)[1].bool()  # (B, L)
    units, head_norms, handles = [None] * len(layers), [None] * len(layers), []

    def hook(store, i, per_head):
        def record(module, args):
            act = args[0][real].float()  # (N, width)
            store[i] = act.view(len(act), heads, -1).norm(dim=-1).sum(0) if per_head else act.abs().mean(0)
        return record

    for i, layer in enumerate(layers):
        handles.append(arch.mlp_out(layer).register_forward_pre_hook(hook(units, i, False)))
        if arch.heads_out is not None:
            handles.append(arch.heads_out(layer).register_forward_pre_hook(hook(head_norms, i, True)))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(calib)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return units, head_norms


def _check_width(model: CausalLM, arch: Arch, heads: int | None, ffn: int | None) -> None:
    config, layer = model.config, resolve_module(model, model.layer_stack)[0]
    if heads is None and ffn is None:
        raise KDistillError("prune_width: give heads, ffn or both (how many to keep in every layer).")
    if ffn is not None:
        width = arch.mlp_width(layer)
        if not 1 <= ffn <= width:
            raise KDistillError(f"prune_width: ffn {ffn} must be between 1 and the MLP width {width}.")
    if heads is None:
        return
    if arch.heads_out is None:
        raise KDistillError(f"prune_width: heads {heads}: {arch.no_heads}")
    total, (groups, group) = config.num_attention_heads, _kv_groups(config)
    allowed = list(range(group, total + 1, group))
    if heads not in allowed:
        raise KDistillError(f"prune_width: heads {heads}: {total} query heads share {groups} key/value groups, and "
                            f"whole groups are kept, so heads must be one of {allowed}.")


def prune_width(model: CausalLM, calib: torch.Tensor, heads: int | None = None, ffn: int | None = None) -> None:
    """Minitron width pruning (Muralidharan et al. 2024, arXiv:2407.14679), in place (on a copy the
    caller made): in every layer keep the ``ffn`` MLP units with the largest mean |activation| and
    the ``heads`` query heads whose outputs have the largest summed norm on ``calib`` ``(B, 3, L)``.
    Grouped-query attention keeps whole key/value groups, ranked by their heads' summed importance.
    The config stays a standard one (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
    ``intermediate_size``; GPT-2 ``n_inner``), so the model exports."""
    layers = resolve_module(model, model.layer_stack)
    arch = arch_of(layers[0])
    for layer in layers:
        arch_of(layer)
    _check_width(model, arch, heads, ffn)
    units, head_norms = _activations(model, calib.to(model.output_head()[0].device), arch)
    for layer, unit_scores, head_scores in zip(layers, units, head_norms):
        if ffn is not None:
            arch.narrow_mlp(layer.mlp, unit_scores.topk(ffn).indices.sort().values)
        if heads is not None:
            _keep_groups(layer.self_attn, head_scores, heads, model.config)
    if ffn is not None:
        setattr(model.config, arch.ffn_field, ffn)
    if heads is not None:
        config, group = model.config, _kv_groups(model.config)[1]
        config.head_dim = layers[0].self_attn.head_dim  # explicit: hidden_size // heads no longer gives it
        config.num_attention_heads, config.num_key_value_heads = heads, heads // group


def _kv_groups(config) -> tuple[int, int]:
    """Key/value groups, and query heads in each, of a (grouped-query) attention config."""
    groups = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return groups, config.num_attention_heads // groups


def _keep_groups(attn: nn.Module, head_scores: torch.Tensor, heads: int, config) -> None:
    """Keep the ``heads // group`` key/value groups of ``attn`` whose query heads matter most."""
    (groups, group), size = _kv_groups(config), attn.head_dim
    keep = head_scores.view(groups, group).sum(1).topk(heads // group).indices.sort().values  # kept kv groups
    query_rows = _units(_units(keep, group), size)
    kv_rows = _units(keep, size)
    attn.q_proj = prune_linear(attn.q_proj, query_rows, 0)
    attn.k_proj = prune_linear(attn.k_proj, kv_rows, 0)
    attn.v_proj = prune_linear(attn.v_proj, kv_rows, 0)
    attn.o_proj = prune_linear(attn.o_proj, query_rows, 1)
    for name, value in (("num_heads", heads), ("num_attention_heads", heads), ("num_key_value_heads", len(keep))):
        if hasattr(attn, name):  # older or other attention classes keep their own counts
            setattr(attn, name, value)


def export_causal_lm(model: CausalLM, folder: str | Path) -> Path:
    """Write ``model``'s ``transformers`` model (float32 safetensors) and tokenizer to ``folder``,
    for ``AutoModelForCausalLM.from_pretrained``. The files are written to a temporary sibling
    first and renamed into place, so no half-written folder is left; an existing export is replaced.
    Returns ``folder``."""
    folder = no_links(folder)  # replaced below: never a link's target
    if folder.exists() and not folder.is_dir():
        raise KDistillError(f"export: {folder} is a file; give a folder to write the model to.")
    hf_model = model.model
    if any(p.dtype != torch.float32 for p in hf_model.parameters()):
        hf_model = copy.deepcopy(hf_model).float()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        hf_model.save_pretrained(tmp)  # transformers 5 writes safetensors only
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except BaseException:
        if old.exists() and not folder.exists():
            old.rename(folder)  # the previous export, back in place
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder
