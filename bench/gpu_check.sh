#!/usr/bin/env bash
# A short check of the data path on an NVIDIA GPU (issue 15): 5,000 synthetic 224-px JPEGs read by
# the image_folder source with 4 DataLoader workers, a small CNN student distilled from a ResNet
# teacher (random weights: speed only) with (1) a live teacher and (2) a disk cache of its
# outputs; bf16 autocast, channels_last, device cuda. Prints samples/s of each and writes
# bench/results/gpu_check.md. At most about 8 minutes; installs nothing (the repository and its
# venv must be there already).
#
#   bash bench/gpu_check.sh               # on the GPU machine
#   bash bench/gpu_check.sh --cpu-smoke   # the same code on the CPU, tiny folder (results under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
MODE=gpu
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=cpu-smoke; fi

if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found; run on a machine with an NVIDIA GPU, or pass --cpu-smoke" >&2; exit 2; }
    CARD=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)
    echo "GPU: $CARD"
    $PY -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', ok); sys.exit(0 if ok else 3)"
else
    CARD="none (--cpu-smoke)"
fi
export GPU_CHECK_MODE="$MODE" GPU_CHECK_CARD="$CARD"

timeout 460 "$PY" - <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, "bench")
import data  # bench/data.py: the JPEG writer and the timed child run

smoke = os.environ["GPU_CHECK_MODE"] == "cpu-smoke"
work = Path("/tmp/kdistill-gpu-check" + ("-smoke" if smoke else ""))
work.mkdir(parents=True, exist_ok=True)
count = 64 if smoke else 5000
folder = work / f"jpeg{count}"
start = time.perf_counter()
data.write_jpeg_folder(folder, count, procs=min(8, os.cpu_count() or 1))
print(f"{count} JPEGs in {folder} ({time.perf_counter() - start:.0f} s)", flush=True)

device, workers, batch = ("cpu", 2, 16) if smoke else ("cuda", 4, 128)
teacher = {"model": "resnet", "args": {"in_channels": 3, "num_classes": 10, "widths": [32, 64, 128, 256]}}
student = {"model": "cnn", "args": {"in_channels": 3, "num_classes": 10, "channels": [16, 32, 64, 128, 128],
                                    "image_size": 224}}


def recipe(cached: bool) -> dict:
    stage = {"name": "distil", "data": "transfer", "epochs": 2, "batch_size": batch, "eval_every": 2,
             "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 5.0e-4}, "amp": "bf16", "channels_last": True,
             "loss": [{"loss": "kd", "args": {"temperature": 4.0, "alpha": 1.0}}]}
    stage.update({"cache": {"dir": str(work / "cache")}} if cached else {"cache_teacher": False})
    return {"name": "gpu-check", "seed": 0, "device": device, "latency": False, "checkpoint": {"enabled": False},
            "data": {"source": "image_folder", "path": str(folder), "images": {"size": 256, "crop": 224},
                     "labelled": 8 if smoke else 100, "val": 0 if smoke else 100, "normalize": "none",
                     "loader": {"workers": workers}},
            "teacher": teacher, "student": student, "stages": [stage]}


rows = []
for name, cached in (("live teacher", False), ("cached teacher", True)):
    r = data.child("measure", recipe(cached))  # a fresh process, memory sampled
    last = r["epochs"][-1]
    rate = last["steady_samples"] / last["steady_s"]
    rows.append((name, rate, last["samples"] / last["seconds"], r["epochs"][0]["seconds"], r["setup_s"],
                 r["peak_run_mb"], r["wall_s"]))
    print(f"{name}: {rate:.0f} samples/s (last epoch, steady), {last['samples'] / last['seconds']:.0f} over the "
          f"whole epoch; setup {r['setup_s']:.1f} s; wall {r['wall_s']:.0f} s", flush=True)

lines = ["# GPU check: 224-px JPEGs, live vs cached teacher", "",
         f"Card: {os.environ['GPU_CHECK_CARD']}; device {device}; {os.cpu_count()} CPUs; "
         f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
         "| teacher | samples/s (steady) | samples/s (whole epoch) | first epoch s | setup s | peak anon MB | wall s |",
         "|---|---:|---:|---:|---:|---:|---:|"]
lines += [f"| {n} | {a:.0f} | {b:.0f} | {c:.1f} | {d:.1f} | {e:.0f} | {f:.0f} |" for n, a, b, c, d, e, f in rows]
lines += ["", f"{count} JPEGs (sides 224..320 px, quality 90), `data.images: {{size: 256, crop: 224}}` (plain "
          "views: a cache holds fixed views), 10% held out as the test set, the rest minus labelled and val as "
          f"the transfer set; {workers} DataLoader workers, batch {batch}, 2 epochs, the last timed (steady: "
          "from its first batch to its last). Student `cnn [16, 32, 64, 128, 128]` at 224 px, teacher "
          "`resnet [32, 64, 128, 256]` (random weights), KD T=4, `amp: bf16`, `channels_last: true`. setup s: "
          "from the built pipeline to the first epoch; for the cached teacher it includes building the cache "
          "(the teacher over every transfer image, decoded in the main process)."]
out = (work / "gpu_check.md") if smoke else Path("bench/results/gpu_check.md")
out.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"written {out}")
EOF
