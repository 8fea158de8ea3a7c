"""The timings of the GPU check (``bench/gpu_check.sh`` runs the CUDA tests first).

    python bench/gpu_check.py                        # on a CUDA machine: 3 to 4 min on one H100
    python bench/gpu_check.py --quick --device cpu   # tiny models on the CPU: the code path, in seconds
                                                     # (compile with the aot_eager backend; no JPEG timings)

(1) Issue 28: a distillation step in float32, ``amp: bf16``, ``amp: fp16`` (with its gradient
scaler), ``compile: true`` (inductor), ``channels_last: true`` and the last three together, as
samples a second and as a ratio to float32 in the same process, for two workloads: the demo's
distillation stage (its teacher and student, KD + hint, batch 128) on 28-px images, and a ResNet
teacher over a wider CNN student on 64-px RGB images (batch 256). The images are random and
held on the device (the time of a step does not depend on the pixels); the teacher's outputs
are computed once, before the first epoch (``cache_teacher``, the default). Each configuration
builds the recipe afresh and trains ``1 + --epochs`` epochs through ``build_pipeline`` and
``train.fit.fit`` (what ``kdistill.run`` trains with, without its final evaluation and report);
the first epoch (compilation, warm-up) is left out, the rest timed from the end of the first
epoch to the end of the last. Rounds are interleaved, the fastest of each configuration kept;
no round starts after ``--budget`` seconds.

(2) Issue 15: a folder of 224-px JPEGs read by 4 DataLoader workers, a small CNN distilled from
a ResNet teacher (random weights) with a live teacher and from a disk cache, bf16 and
channels_last (``bench/data.py`` writes the images and times each run in a fresh process).

Writes gpu_check.md and gpu_check.json to ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402  (bench/data.py: the JPEG writer, the timed child run, the code version)
from common import write_lines  # noqa: E402

from kdistill.pipeline import build_pipeline  # noqa: E402
from kdistill.recipe import load_recipe  # noqa: E402
from kdistill.rundir import NullRunDir  # noqa: E402
from kdistill.train.fit import fit  # noqa: E402

DEMO = ROOT / "kdistill" / "recipes" / "demo.yaml"
KD = {"loss": "kd", "args": {"temperature": 4.0, "alpha": 1.0}}
# the stage options timed; fp32 first, the baseline of every ratio
CONFIGS = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "fp16": {"amp": "fp16"},
    "compile": {"compile": True},
    "channels_last": {"channels_last": True},
    "bf16 + channels_last + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}


def workloads(quick: bool) -> dict[str, dict]:
    """name -> input shape, samples an epoch, batch size, teacher, student, loss terms, optimiser."""
    if quick:
        tiny = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}
        return {"tiny (8 px)": {"shape": (1, 8, 8), "samples": 128, "batch": 32, "teacher": tiny, "student": tiny,
                                "loss": [KD], "optimizer": {"name": "sgd", "lr": 0.05}}}
    import yaml

    demo = yaml.safe_load(DEMO.read_text())
    stage = next(s for s in demo["stages"] if s["data"] == "transfer")
    return {
        "demo (28 px)": {"shape": (1, 28, 28), "samples": 20480, "batch": stage["batch_size"],
                         "teacher": {**demo["teacher"], "weights": str(DEMO.parent / demo["teacher"]["weights"])},
                         "student": demo["student"], "loss": stage["loss"], "optimizer": stage["optimizer"]},
        "ResNet teacher (64 px RGB)": {
            "shape": (3, 64, 64), "samples": 8192, "batch": 256,
            "teacher": {"model": "resnet", "args": {"in_channels": 3, "widths": [32, 64, 128, 256]}},
            "student": {"model": "cnn", "args": {"in_channels": 3, "channels": [32, 64, 128, 256], "image_size": 64}},
            "loss": [KD], "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 5.0e-4}},
    }


def random_images(shape: tuple, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``(count, *shape)`` uniform in [0, 1) and labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, *shape, generator=g), torch.randint(0, 10, (count,), generator=g)


def work_data(work: dict) -> tuple:
    """``(train, test)`` arrays of ``work``: ``samples`` transfer samples and a batch each of
    labelled and validation samples; a batch of test samples."""
    return (random_images(work["shape"], work["samples"] + 2 * work["batch"], seed=0),
            random_images(work["shape"], work["batch"], seed=1))


def step_recipe(work: dict, options: dict, device: str, epochs: int) -> dict:
    """One distillation stage of ``work`` on the transfer set, with the stage ``options`` timed.
    The data (given as arrays) hold ``batch`` labelled and ``batch`` validation samples besides."""
    return {"name": "gpu-check", "seed": 0, "device": device, "latency": False, "checkpoint": {"enabled": False},
            "data": {"source": "custom", "labelled": work["batch"], "val": work["batch"], "normalize": "none"},
            "teacher": work["teacher"], "student": work["student"],
            "stages": [{"name": "distil", "data": "transfer", "epochs": epochs, "batch_size": work["batch"],
                        "eval_every": epochs, "optimizer": work["optimizer"], "loss": work["loss"], **options}]}


class EpochClock(NullRunDir):
    """A run directory that writes nothing and notes when each epoch's record arrives (after the
    epoch's last step; the device is synchronised first)."""

    def __init__(self):
        self.times: list[float] = []

    def log(self, record: dict) -> None:
        super().log(record)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def measure(work: dict, options: dict, device: str, epochs: int, arrays) -> dict:
    """Train ``1 + epochs`` epochs of ``work`` with ``options``; samples a second over the last
    ``epochs``, seconds to the end of the first (setup, teacher outputs, compilation), peak GPU memory
    (None on the CPU)."""
    torch.compiler.reset()  # every compiled configuration compiles afresh
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    pipeline = build_pipeline(load_recipe(step_recipe(work, options, device, 1 + epochs)), data=arrays)
    clock = EpochClock()
    start = time.perf_counter()
    fit(pipeline, clock)
    steady = clock.times[-1] - clock.times[0]
    peak = torch.cuda.max_memory_allocated() / 2**20 if pipeline.device.type == "cuda" else None
    del pipeline
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"samples_s": epochs * work["samples"] / steady, "steady_s": steady,
            "first_epoch_s": clock.times[0] - start, "peak_mb": peak}


def time_steps(quick: bool, device: str, epochs: int, rounds: int, budget: float, configs: list[str]) -> list[dict]:
    """Every workload in every configuration, ``rounds`` interleaved rounds (none started past
    ``budget`` seconds): one record a run, or its error in one line."""
    started, records = time.perf_counter(), []
    works = workloads(quick)
    arrays = {name: work_data(work) for name, work in works.items()}
    for round_ in range(rounds):
        if round_ and time.perf_counter() - started > budget:
            print(f"steps: {budget:.0f} s budget spent; {round_} round(s) run", flush=True)
            break
        for name, work in works.items():
            for config in configs:
                record = {"workload": name, "config": config, "round": round_}
                options = CONFIGS[config]
                if quick and options.get("compile"):  # a backend that needs no C compiler: seconds, not a minute
                    options = {**options, "compile": "aot_eager"}
                try:
                    record.update(measure(work, options, device, epochs, arrays[name]))
                    print(f"{name} | {config} | round {round_ + 1}: {record['samples_s']:.0f} samples/s, "
                          f"first epoch {record['first_epoch_s']:.1f} s", flush=True)
                except Exception as err:  # a path that fails on this machine is a finding, not the end of the check
                    traceback.print_exc()
                    record["error"] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"
                records.append(record)
    return records


def steps_table(records: list[dict], configs: list[str]) -> list[str]:
    """The fastest run of each (workload, configuration), and its ratio to float32's."""
    lines = ["| workload | configuration | samples/s | vs fp32 | first epoch s | peak GPU MB | runs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["workload"] for r in records):
        best = {}
        for config in configs:
            runs = [r for r in records if r["workload"] == name and r["config"] == config]
            ok = [r for r in runs if "error" not in r]
            if runs and not ok:
                lines.append(f"| {name} | {config} | failed: {runs[0]['error']} | - | - | - | {len(runs)} |")
            if not ok:
                continue
            best[config] = max(ok, key=lambda r: r["samples_s"])
            b = best[config]
            ratio = f"{b['samples_s'] / best['fp32']['samples_s']:.2f}x" if "fp32" in best else "-"
            peak = "-" if b["peak_mb"] is None else f"{b['peak_mb']:.0f}"
            lines.append(f"| {name} | {config} | {b['samples_s']:.0f} | {ratio} | {b['first_epoch_s']:.1f} | "
                         f"{peak} | {len(ok)} |")
    return lines


def jpeg_part(quick: bool) -> list[str]:
    """Issue 15's data path: 224-px JPEGs read by DataLoader workers, live against cached teacher."""
    work = Path("/tmp/kdistill-gpu-check" + ("-smoke" if quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    count = 64 if quick else 5000
    folder = work / f"jpeg{count}"
    start = time.perf_counter()
    data.write_jpeg_folder(folder, count, procs=min(8, os.cpu_count() or 1))
    print(f"{count} JPEGs in {folder} ({time.perf_counter() - start:.0f} s)", flush=True)
    device, workers, batch = ("cpu", 2, 16) if quick else ("cuda", 4, 128)
    rows = []
    for name, cached in (("live teacher", False), ("cached teacher", True)):
        r = data.child("measure", jpeg_recipe(work, folder, cached, quick, device, workers, batch))  # a fresh process
        last = r["epochs"][-1]
        rows.append(f"| {name} | {last['steady_samples'] / last['steady_s']:.0f} | "
                    f"{last['samples'] / last['seconds']:.0f} | {r['epochs'][0]['seconds']:.1f} | {r['setup_s']:.1f} | "
                    f"{r['peak_run_mb']:.0f} | {r['wall_s']:.0f} |")
        print(f"{name}: {rows[-1]}", flush=True)
    return ["## 224-px JPEGs, live against cached teacher (issue 15)", "",
            "| teacher | samples/s (steady) | samples/s (whole epoch) | first epoch s | setup s | peak anon MB "
            "| wall s |",
            "|---|---:|---:|---:|---:|---:|---:|", *rows, "",
            f"{count} JPEGs (sides 224..320 px, quality 90), `data.images: {{size: 256, crop: 224}}` (plain views: "
            "a cache holds fixed views), 10% held out as the test set, the rest minus labelled and val as the "
            f"transfer set; {workers} DataLoader workers, batch {batch}, 2 epochs, the last timed (steady: from its "
            "first batch to its last). Student `cnn [16, 32, 64, 128, 128]` at 224 px, teacher `resnet [32, 64, "
            "128, 256]` (random weights), KD T=4, `amp: bf16`, `channels_last: true`, device "
            f"{device}. setup s: from the built pipeline to the first epoch; for the cached teacher it includes "
            "building the cache (the teacher over every transfer image, decoded in the main process)."]


def jpeg_recipe(work: Path, folder: Path, cached: bool, quick: bool, device: str, workers: int, batch: int) -> dict:
    teacher = {"model": "resnet", "args": {"in_channels": 3, "num_classes": 10, "widths": [32, 64, 128, 256]}}
    student = {"model": "cnn", "args": {"in_channels": 3, "num_classes": 10, "channels": [16, 32, 64, 128, 128],
                                        "image_size": 224}}
    stage = {"name": "distil", "data": "transfer", "epochs": 2, "batch_size": batch, "eval_every": 2,
             "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 5.0e-4}, "amp": "bf16", "channels_last": True,
             "loss": [KD]}
    stage.update({"cache": {"dir": str(work / "cache")}} if cached else {"cache_teacher": False})
    return {"name": "gpu-check", "seed": 0, "device": device, "latency": False, "checkpoint": {"enabled": False},
            "data": {"source": "image_folder", "path": str(folder), "images": {"size": 256, "crop": 224},
                     "labelled": 8 if quick else 100, "val": 0 if quick else 100, "normalize": "none",
                     "loader": {"workers": workers}},
            "teacher": teacher, "student": student, "stages": [stage]}


def header(device: str, quick: bool) -> list[str]:
    card = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"none (device {device})"
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    lines = ["# GPU check: distillation step throughput", ""]
    if quick:
        lines += ["**Smoke run (`--quick`): tiny models on few samples; not the measurement.**", ""]
    return lines + [f"Card: {card}; torch {torch.__version__}{cuda}; Python {platform.python_version()}; "
                    f"{os.cpu_count()} CPUs; kdistill at {data.code_version()}; {time.strftime('%Y-%m-%d %H:%M')}.", "",
                    "## Precision, compilation and layout (issue 28)", ""]


def steps_note(epochs: int) -> list[str]:
    """What the step table's columns measure."""
    return ["", f"samples/s: the transfer set's samples over the time of epochs 2..{1 + epochs} (the first, with "
            "compilation and warm-up, left out), the fastest of the rounds; vs fp32: over the fp32 row of the same "
            "workload, measured in the same process. first epoch s: from `fit`'s start to the end of the first epoch "
            "(the teacher's outputs over the transfer set, and compilation, included). Random images held on the "
            "device; a fresh pipeline each run. Demo: `cnn [16, 32, 64]` from the demo's trained teacher, KD T=4 + "
            "hint on `stages.2`, batch 128, SGD. ResNet: `resnet [32, 64, 128, 256]` (random weights) into `cnn "
            "[32, 64, 128, 256]`, KD T=4, batch 256. `bf16` and `fp16` are the stage's `amp` (fp16 with a gradient "
            "scaler); `compile` is `compile: true` (inductor)."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and few samples: a smoke run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed after the first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every configuration")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds after which no round of (1) starts")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--parts", nargs="+", choices=["steps", "jpeg"], default=["steps", "jpeg"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available here; run on a GPU machine, or pass --quick --device cpu")
    epochs, rounds = (1, 1) if args.quick else (args.epochs, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = header(args.device, args.quick)
    if "steps" in args.parts:
        configs = ["fp32", *[c for c in args.configs if c != "fp32"]]  # the baseline always runs
        records = time_steps(args.quick, args.device, epochs, rounds, args.budget, configs)
        (args.out / "gpu_check.json").write_text(json.dumps(records, indent=1))
        lines += steps_table(records, configs) + steps_note(epochs)
        write_lines(lines, args.out / "gpu_check.md")  # kept if a later part runs out of time
    if "jpeg" in args.parts:
        lines += ["", *jpeg_part(args.quick)]
    print(write_lines(lines, args.out / "gpu_check.md"))
    print(f"written {args.out / 'gpu_check.md'}")


if __name__ == "__main__":
    main()
