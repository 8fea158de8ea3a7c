"""A student as one ONNX file: ``export_onnx`` writes it for a model taking one tensor and checks it
with onnxruntime against PyTorch. A text model's packed ``(B, 2, L)`` token ids and attention mask
become the graph's two usual inputs, ``input_ids`` and ``attention_mask``, as a tokenizer gives them.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.hf import HFEncoder
from kdistill.models.infer import eval_mode


@contextmanager
def export_mode(model: nn.Module, untrim: bool = False):
    """Eval mode (and, with ``untrim``, every ``HFEncoder`` untrimmed: a static graph); the
    modules' own modes are restored afterwards."""
    trims = {m: m.trim for m in model.modules() if isinstance(m, HFEncoder)} if untrim else {}
    with eval_mode(model):
        for m in trims:
            m.trim = False
        try:
            yield model
        finally:
            for m, trim in trims.items():
                m.trim = trim


def _as_tensors(out, owner: str = "export_onnx") -> list[torch.Tensor]:
    """A model output (a tensor, or a tuple/list of them) as a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise KDistillError(f"{owner}: the model returns {type(out).__name__}; only models returning a tensor "
                        "(or a tuple of tensors) export to ONNX.")


TOKEN_INPUTS = ("input_ids", "attention_mask")


def packed_tokens(sample: torch.Tensor) -> bool:
    """Whether ``sample`` is a text model's packed batch: ``(B, 2, L)`` int64, token ids and
    attention mask stacked (whatever the model that takes it)."""
    return sample.dim() == 3 and sample.shape[1] == 2 and sample.dtype == torch.int64


class TokenInputs(nn.Module):
    """``model`` taking the two tensors a tokenizer gives, ``input_ids`` and ``attention_mask``
    (each ``(B, L)`` int64), in place of its packed ``(B, 2, L)`` input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.model(torch.stack([input_ids, attention_mask], dim=1))  # (B, 2, L)


def graph_inputs(sample: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ONNX graph's inputs for ``sample``, by name: ``input_ids`` and ``attention_mask`` of
    packed tokens, else ``input``."""
    if packed_tokens(sample):
        return dict(zip(TOKEN_INPUTS, sample.unbind(1)))
    return {"input": sample}


def _dynamic_axes(inputs: dict[str, torch.Tensor], n_out: int, dynamic_batch: bool) -> tuple[list[str], dict]:
    """Output names and dynamic axes: the batch (if asked), and the sequence of token inputs."""
    outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] = {name: {} for name in inputs}
    if dynamic_batch:
        for name in inputs:
            axes[name][0] = "batch"
        axes.update({name: {0: "batch"} for name in outputs})
    if list(inputs) == list(TOKEN_INPUTS):
        for name in inputs:
            axes[name][1] = "sequence"
    elif inputs["input"].dim() == 3 and not inputs["input"].is_floating_point():
        axes["input"][2] = "sequence"  # other packed tokens, e.g. a language model's (B, 3, L)
    return outputs, {k: v for k, v in axes.items() if v}


def _run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> list:
    """The ONNX model's outputs on ``inputs`` (by name) with onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise KDistillError("export_onnx: onnxruntime is not installed; pip install onnxruntime, "
                            "or pass check=False.") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.detach().cpu().numpy() for name, x in inputs.items()})


def _max_abs_diff(ours: list[torch.Tensor], theirs: list) -> float:
    """Largest absolute difference between PyTorch outputs and onnxruntime arrays (inf if shapes differ)."""
    if len(ours) != len(theirs):
        return float("inf")
    diff = 0.0
    for t, a in zip(ours, theirs):
        a = torch.from_numpy(a)
        if tuple(t.shape) != tuple(a.shape):
            return float("inf")
        diff = max(diff, (t.detach().cpu().double() - a.double()).abs().max().item() if t.numel() else 0.0)
    return diff


def export_onnx(model: nn.Module, sample: torch.Tensor, path: str | Path, check: bool = True,
                atol: float = 1e-4, dynamic_batch: bool = True) -> dict:
    """Export a model taking one tensor to ONNX, in eval mode, and check it against PyTorch.

    Args:
        model: any kdistill model: images ``(B, C, H, W)`` in (the graph's input ``input``), or a
            text model's packed ``(B, 2, L)`` int64 tokens: the graph then takes ``input_ids`` and
            ``attention_mask``, each ``(batch, sequence)`` int64, as a tokenizer gives them
            (``HFEncoder``s are exported untrimmed).
        sample: an input to trace with (and to check on).
        path: the ``.onnx`` file to write (its folder is created).
        check: run the file with onnxruntime on ``sample`` and compare with the model's output
            (the model as given, trimming included).
        atol: the largest absolute difference ``check`` accepts.
        dynamic_batch: make the batch axis dynamic.
    Returns: ``{"path", "max_abs_diff" (nan without check), "bytes", "inputs"}``; ``inputs``: the
    graph's input names, in order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(iter(model.parameters()), torch.empty(0)).device
    sample = sample.to(device)
    inputs = graph_inputs(sample)
    graph = TokenInputs(model) if len(inputs) > 1 else model
    with export_mode(model, untrim=True), torch.no_grad():
        outputs, axes = _dynamic_axes(inputs, len(_as_tensors(model(sample))), dynamic_batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks; the check below decides
            # the TorchScript exporter: torch's default (dynamo) one needs onnxscript, not a dependency
            torch.onnx.export(graph, tuple(inputs.values()), str(path), dynamo=False, input_names=list(inputs),
                              output_names=outputs, dynamic_axes=axes)
    diff = float("nan")
    if check:
        with export_mode(model), torch.no_grad():
            expected = _as_tensors(model(sample))  # the model as given (trimmed, if it trims)
        diff = _max_abs_diff(expected, _run_onnx(path, inputs))
        if not diff <= atol:
            raise KDistillError(f"export_onnx: {path} differs from PyTorch by {diff:.3g} (> atol {atol:g}) on the "
                                "sample; the model may branch on its input's values, or raise atol.")
    return {"path": str(path), "max_abs_diff": diff, "bytes": path.stat().st_size, "inputs": list(inputs)}


# --------------------------------------------------------------------------- a finished run's student

