"""Export trained students: a sentence-transformers folder for text encoders, ONNX for any model.

``export_sentence_transformer`` writes a folder that ``transformers.AutoModel`` /
``AutoTokenizer`` and ``sentence_transformers.SentenceTransformer`` both load as they are
(the layout of all-MiniLM-L6-v2: the model and tokenizer at the root, then mean pooling and,
when the encoder normalises, a Normalize module). ``export_onnx`` writes one ONNX file for a
model taking one tensor (images, or an ``HFEncoder``'s packed ``(B, 2, L)`` tokens) and checks
it with onnxruntime against PyTorch.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.hf import HFEncoder
from kdistill.data.preprocess import Preprocess, input_steps
from kdistill.models.weights import make_readable, save_weights
from kdistill.paths import user_path
from kdistill.rebuild import rebuild_run

# --------------------------------------------------------------------------- sentence-transformers


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


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf8")


def _write_sentence_transformer_files(folder: Path, hidden_size: int, max_length: int, normalize: bool) -> None:
    """The modules.json, pooling and config files that sentence-transformers reads."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    versions = {name: _version(name) for name in ("sentence-transformers", "transformers")}
    versions = {k.replace("-", "_"): v for k, v in versions.items() if v}
    versions["pytorch"] = torch.__version__
    _write_json(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        "__version__": versions,
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def _prepare_target(out_dir: Path, overwrite: bool) -> Path:
    """Check ``out_dir`` may be written; return the ``.incomplete`` folder to write into first."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KDistillError(f"export: {out_dir} is a file; give a folder path.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise KDistillError(f"export: {out_dir} exists and is not empty; choose a new folder or pass overwrite=True.")
    staging = out_dir.with_name(out_dir.name + ".incomplete")
    if staging.exists():
        shutil.rmtree(staging)  # left over from an export that failed half-way
    staging.mkdir(parents=True)
    return staging


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` (if any) by the finished ``staging`` folder."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def export_sentence_transformer(encoder: HFEncoder, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``encoder`` as a folder that ``transformers.AutoModel``/``AutoTokenizer`` and
    ``sentence_transformers.SentenceTransformer`` load, giving the same embeddings.

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
    staging = _prepare_target(out_dir, overwrite)
    try:
        encoder.model.save_pretrained(staging)
        encoder.tokenizer.save_pretrained(staging)
        _write_sentence_transformer_files(staging, hidden_size, encoder.max_length, encoder.normalize)
        make_readable(staging)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------- ONNX


@contextmanager
def _eval_mode(model: nn.Module, untrim: bool = False):
    """Eval mode (and, with ``untrim``, every ``HFEncoder`` untrimmed: a static graph); the
    modules' own modes are restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    trims = {m: m.trim for m in model.modules() if isinstance(m, HFEncoder)} if untrim else {}
    model.eval()
    for m in trims:
        m.trim = False
    try:
        yield model
    finally:
        for m, trim in trims.items():
            m.trim = trim
        for m, training in modes.items():
            m.training = training


def _as_tensors(out, owner: str = "export_onnx") -> list[torch.Tensor]:
    """A model output (a tensor, or a tuple/list of them) as a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise KDistillError(f"{owner}: the model returns {type(out).__name__}; only models returning a tensor "
                        "(or a tuple of tensors) export to ONNX.")


def _dynamic_axes(sample: torch.Tensor, n_out: int, dynamic_batch: bool) -> tuple[list[str], dict]:
    """Output names and dynamic axes: the batch (if asked), and the sequence of packed tokens."""
    outputs = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] = {"input": {}}
    if dynamic_batch:
        axes["input"][0] = "batch"
        axes.update({name: {0: "batch"} for name in outputs})
    if sample.dim() == 3 and not sample.is_floating_point():
        axes["input"][2] = "sequence"  # packed (B, 2, L) token ids and mask
    return outputs, {k: v for k, v in axes.items() if v}


def _run_onnx(path: Path, sample: torch.Tensor) -> list:
    """The ONNX model's outputs on ``sample`` with onnxruntime on the CPU."""
    try:
        import onnxruntime
    except ImportError:
        raise KDistillError("export_onnx: onnxruntime is not installed; pip install onnxruntime, "
                            "or pass check=False.") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: sample.detach().cpu().numpy()})


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
        model: any kdistill model: images ``(B, C, H, W)`` in, or an ``HFEncoder``'s packed
            ``(B, 2, L)`` int64 tokens (exported untrimmed, with a dynamic sequence axis).
        sample: an input to trace with (and to check on).
        path: the ``.onnx`` file to write (its folder is created).
        check: run the file with onnxruntime on ``sample`` and compare with the model's output
            (the model as given, trimming included).
        atol: the largest absolute difference ``check`` accepts.
        dynamic_batch: make the batch axis dynamic.
    Returns: ``{"path", "max_abs_diff" (nan without check), "bytes"}``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(iter(model.parameters()), torch.empty(0)).device
    sample = sample.to(device)
    with _eval_mode(model, untrim=True), torch.no_grad():
        outputs, axes = _dynamic_axes(sample, len(_as_tensors(model(sample))), dynamic_batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks; the check below decides
            # the TorchScript exporter: torch's default (dynamo) one needs onnxscript, not a dependency
            torch.onnx.export(model, (sample,), str(path), dynamo=False, input_names=["input"],
                              output_names=outputs, dynamic_axes=axes)
    diff = float("nan")
    if check:
        with _eval_mode(model), torch.no_grad():
            expected = _as_tensors(model(sample))  # the model as given (trimmed, if it trims)
        diff = _max_abs_diff(expected, _run_onnx(path, sample))
        if not diff <= atol:
            raise KDistillError(f"export_onnx: {path} differs from PyTorch by {diff:.3g} (> atol {atol:g}) on the "
                                "sample; the model may branch on its input's values, or raise atol.")
    return {"path": str(path), "max_abs_diff": diff, "bytes": path.stat().st_size}


# --------------------------------------------------------------------------- a finished run's student

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
FORMATS = ("safetensors", "onnx", "torchscript")


def class_names(recipe, num_classes: int) -> list[str]:
    """The names of the recipe's classes where the data source knows them, else their numbers."""
    if recipe.data.source == "fashion_mnist" and recipe.data.path is None and num_classes == 10:
        return FASHION_MNIST_CLASSES
    if recipe.data.source == "wordnet":
        from kdistill.data.text import load_wordnet

        return load_wordnet(recipe.data.path, recipe.data.text.pos, examples=False).classes
    return [str(i) for i in range(num_classes)]


def export_run(run_dir: str | Path, fmt: str = "safetensors", out: str | Path | None = None,
               overwrite: bool = False, trust_code: bool = False) -> dict:
    """Export a finished run's student alone (no teacher, adapters or loss state) as
    ``student.<ext>`` in ``out`` (default ``<run_dir>/export``), with ``student.json``: the raw
    input (dtype, shape), every preprocessing step that turns it into the input the student
    takes (shape, dtype), its class names and the format. ONNX and TorchScript files are checked
    against PyTorch on real test inputs. ``trust_code``: allow the run's recipe to import the
    model callables it names (``package.module:callable``).

    Returns: the JSON written, with ``path``.
    """
    if fmt not in FORMATS:
        raise KDistillError(f"export: unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    run_dir = user_path(run_dir, "export")
    out = user_path(out, "export --out") if out is not None else run_dir / "export"
    target = out / f"student.{ {'safetensors': 'safetensors', 'onnx': 'onnx', 'torchscript': 'pt'}[fmt] }"
    if out.exists() and not out.is_dir():
        raise KDistillError(f"export: {out} is a file; give a folder with --out.")
    if target.exists() and not overwrite:
        raise KDistillError(f"export: {target} exists; choose another --out or pass --overwrite.")
    recipe, models, splits, info = rebuild_run(run_dir, roles=("student",), trust_code=trust_code)
    if "student" not in models:
        raise KDistillError(f"export: the run in {run_dir} trained no student (its stages train "
                            f"{', '.join(sorted({s.train for s in recipe.stages}))}); export a run with a student.")
    student = models["student"].cpu().eval()
    sample = splits.test_set.x[:64]
    preprocess = Preprocess.from_info(info)
    input_shape = [None, *sample.shape[1:]]
    meta = {"format": fmt, "recipe": recipe.name, **input_steps(recipe, preprocess, input_shape),
            "input_shape": input_shape, "input_dtype": str(sample.dtype).removeprefix("torch."),
            "classes": class_names(recipe, int(splits.test_set.y.max()) + 1) if recipe.task == "classify" else None,
            "task": recipe.task}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # written under temporary names and renamed once checked: a failed export leaves nothing
    tmp, tmp_json = out / f".{target.name}.tmp", out / ".student.json.tmp"
    try:
        if fmt == "safetensors":
            save_weights(student, tmp, {"recipe": recipe.name, **(preprocess.to_metadata() if preprocess else {})})
        elif fmt == "onnx":
            meta["max_abs_diff"] = export_onnx(student, sample, tmp)["max_abs_diff"]
        else:
            with _eval_mode(student, untrim=True), torch.no_grad(), warnings.catch_warnings():
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
        tmp_json.write_text(json.dumps(meta, indent=2))
        tmp.replace(target)
        tmp_json.replace(out / "student.json")
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return meta
