"""Label efficiency on Fashion-MNIST: the student trained on labels alone versus distilled with
each method, at 1%, 10% and 100% of the labels, 3 seeds, last-epoch test accuracy.

    python bench/label_efficiency.py            # the full table (hours on 2 CPU cores; resumable)
    python bench/label_efficiency.py --quick    # a smoke run on digits in seconds

5,000 training images are held out (data.val) and never trained on; the percentages are of
the other 55,000. Every cell is appended to bench/results/label_efficiency.jsonl as soon as
it finishes, and a rerun skips the cells already there, so the benchmark can be stopped and
resumed. The table goes to bench/results/label_efficiency.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CellLog, decay_everything, mean_sd, write_lines  # noqa: E402

from kdistill import run
from kdistill.cli import demo_recipe
from kdistill.recipe import load_recipe

HERE = Path(__file__).parent
RESULTS = HERE / "results"
FRACTIONS = {"1%": 0.01, "10%": 0.10, "100%": 1.00}
ROWS = ["labels alone", "KD", "hint", "VID", "shallow", "deep", "composite"]
KD = {"loss": "kd", "args": {"temperature": 4.0, "alpha": 1.0}}
CE = {"loss": "ce"}


def _distil(loss, epochs):
    # all training images (labels withheld except the labelled ones): ce reads the labelled ones
    return {"name": "distil", "data": "labelled+transfer", "epochs": epochs, "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 5e-4}, "eval_every": epochs, "loss": loss}


def _finetune(loss, epochs, lr=0.002):
    return {"name": "finetune", "data": "labelled", "epochs": epochs, "batch_size": 64,
            "optimizer": {"name": "sgd", "lr": lr, "weight_decay": 5e-4}, "eval_every": epochs, "loss": loss}


def row_stages(row: str, n_labels: int, epochs: int) -> tuple[list[dict], dict]:
    """(stages, extra recipe keys) of one row. ``epochs``: passes over the 55,000 images."""
    # fine-tuning and label-only training get a comparable number of steps at every label count
    ft_epochs = max(1, min(20, 2000 // max(1, n_labels // 64)))
    tap = {"student": "stages.2", "teacher": "stages.2"}
    if row == "labels alone":
        passes = max(1, epochs * 55000 // max(1, n_labels))
        stage = {"name": "labels", "data": "labelled", "epochs": min(passes, 200), "batch_size": 64,
                 "augment": {"shift": 2, "flip": True}, "eval_every": min(passes, 200), "loss": [CE]}
        return [stage], {}
    finetune = _finetune([{"loss": "kd", "args": {"temperature": 4.0, "alpha": 0.5}}], ft_epochs)
    if row == "KD":
        return [_distil([KD, CE], epochs), finetune], {}
    if row == "hint":
        return [_distil([KD, CE, {"loss": "hint", **tap}], epochs), finetune], {}
    if row == "VID":
        return [_distil([KD, CE, {"loss": "vid", **tap}], epochs), finetune], {}
    if row == "deep":
        deep = [KD, CE, {"loss": "vid", **tap}, {"loss": "at", "weight": 100.0, **tap}]
        ft = _finetune([{"loss": "ovr"}, {"loss": "kd", "args": {"temperature": 4.0, "alpha": 1.0}},
                        {"loss": "scatter", "weight": 0.01, "student": "head.0"}], ft_epochs)
        return [_distil(deep, epochs), ft], {}
    if row == "composite":
        composite = [KD, CE, {"loss": "hint", **tap}, {"loss": "residual_smooth", "weight": 1.0, **tap},
                     {"loss": "entropy", "weight": -0.01}]
        ft = _finetune([{"loss": "kd", "args": {"temperature": 4.0, "alpha": 0.5}},
                        {"loss": "l2_start", "weight": 1e-3, "args": {"start": "distil"}}], ft_epochs)
        return [_distil(composite, epochs), ft], {}
    if row == "shallow":
        shallow = [{"loss": "embed_mse", "student": "head.0", "teacher": "embedding"},
                   {"loss": "distance_kl", "weight": 0.1, "student": "head.0", "teacher": "embedding"}]
        ft = _finetune([{"loss": "prototype_kl", "student": "prototypes", "args": {"lam": 0.1}},
                        {"loss": "ce", "student": "prototypes"}], ft_epochs, lr=0.01)
        ft["data"] = "labelled+transfer"  # M(x) fitted to the teacher on every image, labels where given
        ft["epochs"] = 1
        return [_distil(shallow, epochs), ft], {"embedding": {"teacher": "head.2", "student": "head.0", "dim": 64}}
    raise ValueError(row)


def cell_recipe(row: str, fraction: float, seed: int, epochs: int, quick: bool) -> dict:
    base = load_recipe(demo_recipe()).model_dump(mode="json")
    pool = 55000
    n_labels = int(round(fraction * pool))
    stages, extra = row_stages(row, n_labels, epochs)
    recipe = {**base, "name": f"{row.replace(' ', '-')}-{fraction}-{seed}", "seed": seed, "stages": stages,
              "latency": False, **extra}
    recipe["data"] = {**base["data"], "labelled": n_labels, "val": 5000}
    if quick:  # digits: 1,797 8x8 images, a tiny teacher trained first
        recipe["data"] = {"source": "digits", "labelled": max(10, int(fraction * 1000)), "val": 100}
        recipe["teacher"] = {"model": "cnn", "args": {"channels": [16, 32, 32], "hidden": 64, "image_size": 8}}
        recipe["student"] = {"model": "cnn", "args": {"channels": [4, 8, 8], "image_size": 8}}
        recipe["stages"] = [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2}, *stages]
        for stage in recipe["stages"]:
            stage["epochs"] = 1
            stage["eval_every"] = 1
    return decay_everything(recipe)


def accuracy(summary: dict, row: str) -> float:
    if row == "shallow":  # the shallow student classifies by distances to its prototypes
        return summary["embedding"]["student"]["prototype_head"]
    return summary["test"]["student"]["accuracy"]


def write_table(log: CellLog, out: Path, epochs: int, seeds: list[int]) -> str:
    teacher = [a for a in log.values("teacher_accuracy") if a is not None]
    params = next(iter(log.values("student_params")), None)
    lines = [
        f"Teacher test accuracy: {100 * statistics.mean(teacher):.2f}%. " if teacher else "",
        f"Student parameters: {params:,}." if params else "",
        "",
        "| student | " + " | ".join(f"{k} labels" for k in FRACTIONS) + " |",
        "|---|" + "---:|" * len(FRACTIONS),
    ]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(mean_sd(log.values("accuracy", row=row, labels=k))
                                              for k in FRACTIONS) + " |")
    lines += ["", f"Test accuracy (%) at the last epoch, mean ± standard deviation over seeds {seeds}; "
              f"distillation passes: {epochs} epochs over the 55,000 training images (5,000 held out). "
              f"Wall time of the cells so far: {log.hours():.2f} h on this machine."]
    return write_lines(lines, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="distillation epochs over the training images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--labels", nargs="+", default=list(FRACTIONS), choices=list(FRACTIONS))
    parser.add_argument("--quick", action="store_true", help="digits, one epoch a stage: a smoke run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--table-only", action="store_true", help="write the table from the cells so far")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "label_efficiency_quick" if args.quick else "label_efficiency"
    log = CellLog(args.results / f"{stem}.jsonl", key=("row", "labels", "seed"))
    if args.table_only:
        print(write_table(log, args.results / f"{stem}.md", args.epochs, args.seeds))
        return
    # seed outermost: the held-out split, hence the training images, depend on the seed alone,
    # so the teacher runs once per seed and every row and label count reuses its outputs
    for seed in args.seeds:
        for labels in args.labels:
            for row in args.rows:
                if log.done(row=row, labels=labels, seed=seed):
                    continue
                recipe = cell_recipe(row, FRACTIONS[labels], seed, args.epochs, args.quick)
                recipe["threads"] = args.threads
                start = time.perf_counter()
                result = run(recipe, runs_dir=args.results / "runs", overwrite=True, progress=False)
                record = {"row": row, "labels": labels, "seed": seed, "accuracy": accuracy(result.summary, row),
                          "teacher_accuracy": result.summary["test"].get("teacher", {}).get("accuracy"),
                          "student_params": result.summary["test"]["student"]["params"],
                          "seconds": time.perf_counter() - start}
                log.add(record)
                print(f"{row:>12} {labels:>5} seed {seed}: {100 * record['accuracy']:.2f}% "
                      f"({record['seconds']:.0f} s)", flush=True)
    print(write_table(log, args.results / f"{stem}.md", args.epochs, args.seeds))


if __name__ == "__main__":
    main()
