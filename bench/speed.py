"""What the teacher costs: a distillation epoch against the student trained alone, with the
teacher live every step (the textbook loop) and with kdistill's disk cache.

    python bench/speed.py            # Fashion-MNIST, two teacher sizes (about 15 min on 2 CPU cores)
    python bench/speed.py --quick    # digits, tiny models: a smoke run in seconds

For each teacher, on the same student, images, batch size and number of steps:
(a) the student alone, cross-entropy on labels: the limit;
(b) the textbook loop: KD with the teacher's forward pass on every batch;
(c) KD from the disk cache (``cache:``): the cache is built once, timed apart, and amortised
    over 10 epochs in the last column.
Each is run in a fresh process, so that peak memory (max RSS, or CUDA's peak allocation) is
its own. Teachers have random weights: the time of a forward pass does not depend on them.
Writes bench/results/speed.md (and speed.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from common import write_lines  # noqa: E402
STUDENT = {"model": "cnn", "args": {"channels": [16, 32, 64]}}
TEACHERS = {  # about 10x and 50x the student's multiply-adds (measured and printed below)
    "CNN 24-48-96": {"model": "cnn", "args": {"channels": [24, 48, 96], "convs_per_stage": 2, "pool_stages": 2}},
    "CNN 56-112-224": {"model": "cnn", "args": {"channels": [56, 112, 224], "convs_per_stage": 2, "hidden": 256}},
}
QUICK_STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}
QUICK_TEACHERS = {"tiny CNN": {"model": "cnn", "args": {"channels": [16, 32], "convs_per_stage": 2, "image_size": 8}}}


def macs(spec: dict, shape: tuple) -> int:
    """Multiply-adds of one forward pass of a model on one input of ``shape`` (convs and linears)."""
    import torch

    from kdistill.models.zoo import build_model

    model, total = build_model(spec["model"], **spec["args"]).eval(), [0]

    def count(module, inputs, out):
        if isinstance(module, torch.nn.Conv2d):
            total[0] += out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
        elif isinstance(module, torch.nn.Linear):
            total[0] += out.numel() * module.in_features

    for m in model.modules():
        m.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    return total[0]


def measure(mode: str, teacher: dict, student: dict, quick: bool, epochs: int, images: int, threads: int | None,
            cache_dir: str) -> dict:
    """One configuration, in this process: seconds of each epoch, cache build time, peak memory."""
    import resource

    import torch

    from kdistill.pipeline import build_pipeline
    from kdistill.recipe import load_recipe
    from kdistill.train.loop import Hooks, train_stage
    from kdistill.train.teacher import teacher_source

    loss = [{"loss": "ce"}] if mode == "alone" else [{"loss": "kd", "args": {"alpha": 0.9}}]
    recipe = {"name": "speed", "seed": 0, "device": "auto", "threads": threads, "latency": False,
              "data": {"source": "digits" if quick else "fashion_mnist", "labelled": min(images, 1347) if quick else images, "normalize": "none"},
              "teacher": teacher, "student": student,
              "stages": [{"name": mode, "data": "labelled", "epochs": epochs, "batch_size": 128, "cache_teacher": False,
                          "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 0.0}, "loss": loss,
                          "cache": {"dir": cache_dir} if mode == "cached" else None}]}
    p = build_pipeline(load_recipe(recipe))
    stage, device = p.recipe.stages[0], p.device
    x, y = p.stage_data(stage)
    teacher_model = p.models["teacher"] if mode != "alone" else None
    build = 0.0
    if mode == "cached":  # the cache on its own, as `kdistill cache` builds it
        start = time.perf_counter()
        teacher_source(teacher_model, p.objectives[mode], x, stage, 0, device).close()
        build = time.perf_counter() - start
    times = []
    last = [time.perf_counter()]

    def tick(epoch, terms):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_stage(p.models["student"], p.objectives[mode], x, y, stage, device, teacher_model, seed=0,
                hooks=Hooks(tick))
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    # the first epoch warms up allocators and caches; of the others the fastest is the epoch time:
    # on a shared machine other jobs only ever add time (as timeit takes the best of its runs)
    return {"epoch_s": min(times[1:] or times), "epochs_s": times, "build_s": build, "peak_bytes": peak, "device": str(device),
            "images": len(x)}


def run_isolated(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(kept: dict | None, new: dict) -> dict:
    """Two measurements of one configuration: the faster epoch and build, the larger peak memory."""
    if kept is None:
        return new
    return {**new, "epoch_s": min(kept["epoch_s"], new["epoch_s"]), "build_s": min(kept["build_s"], new["build_s"]),
            "peak_bytes": max(kept["peak_bytes"], new["peak_bytes"]), "epochs_s": kept["epochs_s"] + new["epochs_s"]}


def write_table(rows: list[dict], out: Path, epochs: int, repeats: int, images: int, device: str) -> str:
    lines = ["| teacher | teacher / student compute | (a) student alone s/epoch | (b) live teacher | "
             "(c) cached | cache build | (b) / (c), 10 epochs incl. build | peak memory a / b / c (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, b, c = r["alone"], r["live"], r["cached"]
        ten = 10 * b["epoch_s"] / (c["build_s"] + 10 * c["epoch_s"])
        mem = " / ".join(f"{m['peak_bytes'] / 2**20:.0f}" for m in (a, b, c))
        lines.append(f"| {r['teacher']} | {r['ratio']:.1f}x | {a['epoch_s']:.2f} | {b['epoch_s'] / a['epoch_s']:.2f}x | "
                     f"{c['epoch_s'] / a['epoch_s']:.2f}x | {c['build_s'] / a['epoch_s']:.2f} epochs | {ten:.2f}x | {mem} |")
    lines += ["", f"Epoch time: the fastest of epochs 2..{epochs} (the first warms up) over {repeats} interleaved "
              f"rounds of (a), (b), (c), each in a fresh process; other jobs on a shared machine only add time. "
              f"{images:,} images, batch 128, device {device}; (b) and (c) as multiples of (a), the cache build "
              "(fastest of the rounds, each into an empty folder) in epochs of (a). Peak memory of (c) includes "
              "building the cache in the same process (the teacher's forward pass at batch 512)."]
    return write_lines(lines, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and tiny models: a smoke run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (a), (b), (c), one after another")
    parser.add_argument("--images", type=int, default=20000, help="training images used")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    args.results.mkdir(parents=True, exist_ok=True)
    student, teachers = (QUICK_STUDENT, QUICK_TEACHERS) if args.quick else (STUDENT, TEACHERS)
    shape = (1, 8, 8) if args.quick else (1, 28, 28)
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name, teacher in teachers.items():
            row = {"teacher": name, "ratio": macs(teacher, shape) / macs(student, shape)}
            for round_ in range(args.repeats):  # interleaved, so that a slow spell hits all three alike
                for mode in ("alone", "live", "cached"):
                    # a fresh folder each round: a cache found already built would time no build
                    one = run_isolated(mode, teacher, student, args.quick, args.epochs, args.images,
                                       args.threads, f"{cache_dir}/{len(rows)}-{round_}")
                    print(f"{name} {mode} round {round_ + 1}: {one['epoch_s']:.2f} s/epoch", flush=True)
                    row[mode] = best(row.get(mode), one)
            rows.append(row)
    stem = "speed_quick" if args.quick else "speed"
    (args.results / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    print(write_table(rows, args.results / f"{stem}.md", args.epochs, args.repeats, rows[0]["alone"]["images"],
                      rows[0]["alone"]["device"]))


if __name__ == "__main__":
    main()
