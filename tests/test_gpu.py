"""CUDA smoke tests of the paths the CPU suite never runs (``pytest -m gpu``; skipped where CUDA
is not available, see ``conftest.py``): bf16, fp16 with its gradient scaler, ``torch.compile``
(inductor), ``channels_last``, the teacher's outputs held on the device (in memory and read from
a disk cache), DDP over nccl with one rank, and a language model distilled in bf16.

Each runs the public ``kdistill.run`` on tiny data (scikit-learn's digits, a random 4-layer
Llama) in seconds, and compares with a plain float32 run: on the GPU, and once on the CPU.
``bench/gpu_check.sh`` runs them, then the timings.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.testing import assert_close

from kdistill import run
from lm_fixtures import lm_texts, save_tiny_causal

pytestmark = pytest.mark.gpu
DEVICE = "cuda"

DATA = {"source": "digits", "labelled": 256, "val": 64, "transfer": 768}  # 12 batches of 64 an epoch
EPOCHS, BATCH = 3, 64
# kind -> (teacher, student, the feature map the hint term matches)
MODELS = {
    "mlp": ({"model": "mlp", "args": {"in_features": 64, "hidden": [32]}},
            {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}, "stages.0"),
    "cnn": ({"model": "cnn", "args": {"channels": [8, 16, 16], "hidden": 32, "image_size": 8}},
            {"model": "cnn", "args": {"channels": [4, 8, 8], "image_size": 8}}, "stages.2"),
}


def recipe(name: str, kind: str, teacher_weights, device: str = DEVICE, **stage) -> dict:
    """KD and a hint from a trained ``kind`` teacher (its weights file) on the digits' transfer
    set; ``stage``: the distillation stage's options under test."""
    teacher, student, tap = MODELS[kind]
    loss = [{"loss": "kd", "args": {"temperature": 4.0, "alpha": 1.0}},
            {"loss": "hint", "student": tap, "teacher": tap}]
    return {"name": name, "seed": 0, "device": device, "latency": False, "checkpoint": {"enabled": False},
            "data": DATA, "teacher": {**teacher, "weights": str(teacher_weights)}, "student": student,
            "stages": [{"name": "distil", "data": "transfer", "epochs": EPOCHS, "batch_size": BATCH,
                        "optimizer": {"name": "sgd", "lr": 0.1}, "loss": loss, **stage}]}


@pytest.fixture(scope="module", autouse=True)
def _full_fp32():
    """Float32 products and convolutions without TF32, so that runs compare at tight tolerances."""
    kept = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = kept


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict:
    """A teacher of each kind trained for 2 epochs on the CPU: kind -> its weights file."""
    root = tmp_path_factory.mktemp("teachers")
    files = {}
    for kind, (teacher, student, _) in MODELS.items():
        tree = {"name": kind, "seed": 0, "device": "cpu", "latency": False, "checkpoint": {"enabled": False},
                "data": DATA, "teacher": teacher, "student": student,
                "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2, "batch_size": BATCH}]}
        files[kind] = run(tree, runs_dir=root, progress=False).run_dir / "teacher.safetensors"
    return files


@pytest.fixture(scope="module")
def plain(teachers, tmp_path_factory) -> dict:
    """The float32 run of each kind on the GPU (the teacher's outputs held in memory, the
    default): kind -> RunResult, what the other paths are compared with."""
    root = tmp_path_factory.mktemp("plain")
    return {kind: run(recipe(f"plain-{kind}", kind, teachers[kind]), runs_dir=root, progress=False)
            for kind in MODELS}


def weights(result) -> torch.Tensor:
    """The trained student's parameters, flat, in float32 on the CPU."""
    return torch.cat([p.detach().float().flatten().cpu() for p in result.student.parameters()])


def accuracy(result) -> float:
    return result.summary["test"]["student"]["accuracy"]


def assert_trained(result) -> None:
    """Every logged term finite, the epoch loss down, the student well above chance (0.1: 10 classes)."""
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    terms = [r["train"] for r in records if "train" in r]
    assert len(terms) == EPOCHS and all(math.isfinite(v) for t in terms for v in t.values()), terms
    assert terms[-1]["loss"] < terms[0]["loss"]
    assert accuracy(result) > 0.4
    assert (result.run_dir / "student.safetensors").is_file() and (result.run_dir / "report.md").is_file()


@contextlib.contextmanager
def output_dtypes():
    """The dtypes of every Linear and Conv2d output while the block runs (autocast shows here)."""
    seen: set[torch.dtype] = set()

    def record(module, inputs, output):
        if isinstance(module, (nn.Linear, nn.Conv2d)) and torch.is_tensor(output):
            seen.add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def test_a_cuda_run_trains_the_student_of_a_cpu_run(teachers, plain, tmp_path):
    cpu = run(recipe("cpu", "mlp", teachers["mlp"], device="cpu"), runs_dir=tmp_path, progress=False)
    gpu = plain["mlp"]
    assert gpu.summary["device"].startswith("cuda") and next(gpu.student.parameters()).is_cuda
    assert_trained(gpu)
    assert_close(weights(gpu), weights(cpu), atol=1e-4, rtol=1e-3)
    assert accuracy(gpu) == pytest.approx(accuracy(cpu), abs=0.01)


def test_teacher_outputs_on_the_device_from_memory_and_from_disk(teachers, plain, tmp_path):
    """``cache_teacher`` (the default): the teacher's outputs computed once and held on the GPU;
    ``cache:``: built on disk by one run and read back by the next. Both train the live teacher's
    student, the disk cache up to the half precision it keeps features in (the memory keeps
    float32)."""
    live = run(recipe("live", "mlp", teachers["mlp"], cache_teacher=False), runs_dir=tmp_path, progress=False)
    cache = {"dir": str(tmp_path / "cache")}
    built = run(recipe("built", "mlp", teachers["mlp"], cache=cache), runs_dir=tmp_path, progress=False)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    read = run(recipe("read", "mlp", teachers["mlp"], cache=cache), runs_dir=tmp_path, progress=False)
    assert files and {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == files
    for result in (live, built, read):
        assert_trained(result)
    assert_close(weights(plain["mlp"]), weights(live), atol=1e-2, rtol=1e-2)
    assert_close(weights(built), weights(live), atol=1e-2, rtol=1e-2)
    assert_close(weights(read), weights(built), atol=1e-6, rtol=0)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_like_float32(amp, teachers, plain, tmp_path, monkeypatch):
    """Autocast to bfloat16 or float16; float16 with a gradient scaler stepping every update."""
    scales = []
    update = torch.amp.GradScaler.update

    def recorded(self, new_scale=None):
        update(self, new_scale)
        if self.is_enabled():
            scales.append(self.get_scale())

    monkeypatch.setattr(torch.amp.GradScaler, "update", recorded)
    with output_dtypes() as seen:
        result = run(recipe(amp, "cnn", teachers["cnn"], amp=amp), runs_dir=tmp_path, progress=False)
    assert {"bf16": torch.bfloat16, "fp16": torch.float16}[amp] in seen
    assert_trained(result)
    if amp == "fp16":  # one update a step, the scale finite (it halves on each step that overflowed)
        assert len(scales) == EPOCHS * DATA["transfer"] // BATCH
        assert all(0 < s < math.inf for s in scales)
    else:
        assert scales == []
    assert_close(weights(result), weights(plain["cnn"]), atol=0.05, rtol=0.05)
    assert accuracy(result) == pytest.approx(accuracy(plain["cnn"]), abs=0.1)


def test_compiled_student_trains_like_the_eager_one(teachers, plain, tmp_path, monkeypatch):
    backends = []
    compile_ = torch.compile

    def recorded(model, **kwargs):
        backends.append(kwargs.get("backend"))
        return compile_(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recorded)
    result = run(recipe("compiled", "cnn", teachers["cnn"], compile=True), runs_dir=tmp_path, progress=False)
    assert backends == ["inductor"]
    assert_trained(result)
    assert_close(weights(result), weights(plain["cnn"]), atol=1e-3, rtol=1e-3)


def test_channels_last_trains_like_the_default_layout(teachers, plain, tmp_path):
    result = run(recipe("nhwc", "cnn", teachers["cnn"], channels_last=True), runs_dir=tmp_path, progress=False)
    convs = [m for m in result.student.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert_trained(result)
    assert_close(weights(result), weights(plain["cnn"]), atol=1e-3, rtol=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_rank_of_nccl_trains_like_no_process_group(teachers, plain, tmp_path, monkeypatch):
    """A process group of one (as torchrun --nproc-per-node 1 makes): the run completes and gives
    the student of a run without one."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        result = run(recipe("ddp", "mlp", teachers["mlp"]), runs_dir=tmp_path, progress=False)
    finally:
        dist.destroy_process_group()
    assert_trained(result)
    assert_close(weights(result), weights(plain["mlp"]), atol=1e-5, rtol=1e-4)


def test_language_model_distils_in_bf16(tmp_path):
    """A tiny random Llama into a 2-layer cut of itself, token KD under bf16 autocast: the cut
    moves towards the teacher, and the exported folder gives its logits on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = save_tiny_causal(tmp_path / "teacher", "llama", sharpen=6.0)
    (tmp_path / "corpus.txt").write_text("\n".join(lm_texts(160)))
    tree = {"name": "lm", "seed": 0, "device": DEVICE, "latency": False, "checkpoint": {"enabled": False},
            "data": {"source": "lm_text", "path": str(tmp_path / "corpus.txt"), "lm": {"block_size": 24, "test": 20}},
            "teacher": {"model": "hf_causal", "args": {"path": str(teacher)}},
            "student": {"from_teacher": {"layers": 2, "pick": "block"}},
            "stages": [{"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 8, "amp": "bf16",
                        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.0},
                        "loss": [{"loss": "token_kd", "args": {"divergence": "jsd", "beta": 0.5}}]}]}
    with output_dtypes() as seen:
        result = run(tree, runs_dir=tmp_path / "runs", progress=False)
    assert torch.bfloat16 in seen
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for r in records for v in r["train"].values())
    test = result.summary["test"]
    assert test["student"]["kl_to_teacher"] < test["cut"]["kl_to_teacher"]
    exported = AutoModelForCausalLM.from_pretrained(result.run_dir / "student_hf").eval()  # on the CPU
    tokenizer = AutoTokenizer.from_pretrained(result.run_dir / "student_hf")
    ids = tokenizer("the dog runs over the", return_tensors="pt").input_ids
    student = result.student.eval()
    with torch.no_grad():
        on_device = student.logits(ids.to(next(student.parameters()).device)).float().cpu()
        assert_close(exported(input_ids=ids).logits, on_device, atol=1e-3, rtol=1e-3)


def test_a_step_never_waits_for_the_device():
    """Between the readings every ``log_every`` steps, a step of KD + labelled CE on data held on
    the GPU queues its work and returns: no operation that makes the host wait for the device
    (CUDA's sync debug mode raises on one)."""
    import kdistill.train.loop as loop
    from kdistill.models.zoo import build_model
    from kdistill.objective.core import build_objective
    from kdistill.recipe import StageSpec

    torch.manual_seed(0)
    device = torch.device(DEVICE)
    teacher = build_model("mlp", in_features=64, hidden=[32]).to(device).eval().requires_grad_(False)
    student = build_model("mlp", in_features=64, hidden=[16]).to(device)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    y[::3] = -1  # a third unlabelled
    objective = build_objective([{"loss": "kd", "args": {"alpha": 0.7}}, {"loss": "ce", "weight": 0.5}]).to(device)
    stage = StageSpec(name="s", epochs=1, batch_size=32, accumulate=2)
    real, steps = loop.step, []

    def strict(*args, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            steps.append(1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "step", strict)
        loop.train_stage(student, objective, x, y, stage, device, teacher,
                         hooks=loop.Hooks(log_every=100))
    assert len(steps) == 8
