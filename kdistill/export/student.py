"""A trained student alone (no teacher, adapters or loss state), as safetensors, ONNX or
TorchScript, beside ``student.json``: its raw input, every preprocessing step that turns it
into the input the student takes, its class names and the format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from kdistill.data.preprocess import Preprocess
from kdistill.errors import KDistillError
from kdistill.export.onnx import export_mode, export_onnx
from kdistill.models.weights import save_weights
from kdistill.paths import no_links, write_own

FORMATS = ("safetensors", "onnx", "torchscript")
EXTENSIONS = {"safetensors": "safetensors", "onnx": "onnx", "torchscript": "pt"}


def write_student(student: torch.nn.Module, sample: torch.Tensor, meta: dict, fmt: str, out: Path, target: Path,
                  preprocess: Preprocess | None) -> dict:
    """Write ``student`` as ``target`` (in folder ``out``) and ``student.json`` (``meta``, with
    the path and, for ONNX and TorchScript, the largest difference from PyTorch on ``sample``).
    Written under temporary names and renamed once checked: a failed export leaves nothing."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # written under temporary names and renamed once checked: a failed export leaves nothing
    tmp, tmp_json = no_links(out / f".{target.name}.tmp"), no_links(out / ".student.json.tmp")
    for final in (target, out / "student.json"):  # replaced by the renames below: refused if a link
        no_links(final)
    try:
        if fmt == "safetensors":
            save_weights(student, tmp, {"recipe": meta["recipe"], **(preprocess.to_metadata() if preprocess else {})})
        elif fmt == "onnx":
            result = export_onnx(student, sample, tmp)
            # a text student's graph takes input_ids and attention_mask, not the packed (N, 2, L)
            meta["max_abs_diff"], meta["onnx_inputs"] = result["max_abs_diff"], result["inputs"]
        else:
            with export_mode(student, untrim=True), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(student, sample[:2])
            with torch.no_grad():
                diff = (traced(sample) - student(sample)).abs().max().item()
            if not diff <= 1e-4:
                raise KDistillError(f"export: the TorchScript student differs from PyTorch by {diff:.3g}; "
                                    "export to onnx or safetensors instead.")
            traced.save(str(tmp))
            meta["max_abs_diff"] = diff
        meta["path"] = str(target)
        write_own(tmp_json, json.dumps(meta, indent=2))
        tmp.replace(target)
        tmp_json.replace(out / "student.json")
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return meta
