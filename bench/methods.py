"""Every distillation method on one task: Fashion-MNIST with all labels, one teacher, two
students (a small CNN and an MLP), 3 seeds, last-epoch test accuracy.

    python bench/methods.py              # the full table (about 1 h on 2 CPU cores; resumable)
    python bench/methods.py --quick      # a smoke run on digits in seconds

5,000 training images are held out (data.val): never trained on, and the only data any choice
was made on (their accuracy is reported beside the test accuracy). Each method is trained as
its paper or the common reimplementations (RepDistiller, mdistiller) do on CIFAR: cross-entropy
plus the method's term, with that term's published weight rescaled to this project's
normalisation of the loss (see WEIGHTS). Every cell is appended to
bench/results/methods.jsonl as soon as it finishes; a rerun skips the cells already there.
The table goes to bench/results/methods.md.
"""

from __future__ import annotations

import argparse
import json
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

STUDENTS = {
    "small CNN": {"model": "cnn", "args": {"channels": [16, 32, 64]}},
    "MLP": {"model": "mlp", "args": {"hidden": [256, 128]}},
}
# where each student family is tapped: its last feature map, its maps in order (FSP), and its
# penultimate embedding; None where the family has no such layer (an MLP has no spatial maps)
STUDENT_TAPS = {
    "small CNN": {"map": "stages.2", "maps": ["stages.0", "stages.1", "stages.2"], "embed": "head.0"},
    "MLP": {"map": None, "maps": None, "embed": "stages.1"},
}
TEACHER_TAPS = {"map": "stages.2", "maps": ["stages.0", "stages.1", "stages.2"], "embed": "head.3"}
# the second teacher of the multi-teacher row: a ResNet trained here on the same 55,000 images
SECOND_TEACHER = {"model": "resnet", "args": {"widths": [16, 32, 64], "blocks_per_stage": 2}}
SECOND_TEACHER_EPOCHS = 3

T = 4.0
# weight of each method's term beside CE (weight 1). RepDistiller's CIFAR weights, rescaled
# where this project's loss is normalised differently from theirs:
#   hint 100, vid 1, rkd 1 (its distance 25 and angle 50 inside), sp 3000, nst 50, crd 0.8: same
#   normalisation; at: RepDistiller averages over the H*W positions of a map, we sum, so
#   1000 / 49 for 7x7 maps; pkt: RepDistiller averages over the B*B pairs, we sum, so
#   30000 / (128 * 127); cc: our kernel-correlation difference is averaged over B*B pairs and
#   RepDistiller's CC is a different approximation, so its 0.02 does not carry over: 100 is
#   this project's setting (no sweep of it is recorded; never chosen on the test set); dkd: mdistiller's CIFAR
#   alpha 1, beta 8 (no warm-up here); dist: the paper's beta = gamma = 1, tau = 1.
WEIGHTS = {"hint": 100.0, "vid": 1.0, "at": 1000 / 49, "rkd": 1.0, "pkt": 30000 / (128 * 127),
           "sp": 3000.0, "cc": 100.0, "nst": 50.0, "crd": 0.8, "dkd": 1.0, "dist": 1.0}
ROWS = ["no distillation", "KD", "FitNets (hint)", "VID", "AT", "RKD", "PKT", "SP", "CC", "NST", "FSP",
        "CRD", "DKD", "DIST", "multi-teacher KD"]


def _stage(name: str, loss: list[dict], epochs: int) -> dict:
    return {"name": name, "data": "labelled", "epochs": epochs, "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
            "schedule": {"name": "cosine"}, "eval_every": epochs, "loss": loss}


def _term(loss: str, student: str, teacher: str, **args) -> dict:
    return {"loss": loss, "weight": WEIGHTS[loss], "student": student, "teacher": teacher, "args": args}


def row_stages(row: str, student: str, epochs: int) -> list[dict] | None:
    """The stages of one cell; None where the method needs a layer the student lacks."""
    s, t = STUDENT_TAPS[student], TEACHER_TAPS
    ce = {"loss": "ce"}
    # feature regression targets: the last maps of CNNs, the penultimate vectors of an MLP
    feat = (s["map"], t["map"]) if s["map"] else (s["embed"], t["embed"])
    method = {
        "no distillation": [],
        "FitNets (hint)": [_term("hint", *feat)],
        "VID": [_term("vid", *feat)],
        "AT": [_term("at", s["map"], t["map"])] if s["map"] else None,
        "RKD": [_term("rkd", s["embed"], t["embed"])],
        "PKT": [_term("pkt", s["embed"], t["embed"])],
        "SP": [_term("sp", *feat)],
        "CC": [_term("cc", s["embed"], t["embed"])],
        "NST": [_term("nst", s["map"], t["map"])] if s["map"] else None,
        "CRD": [_term("crd", s["embed"], t["embed"])],
        "DKD": [_term("dkd", "logits", "logits", alpha=1.0, beta=8.0, temperature=T)],
        "DIST": [_term("dist", "logits", "logits")],
    }
    if row == "KD":
        return [_stage("train", [{"loss": "kd", "args": {"temperature": T, "alpha": 0.9}}], epochs)]
    if row == "multi-teacher KD":
        multi = {"loss": "multi_kd", "weight": 0.9, "teacher": ["logits", "second:logits"],
                 "args": {"temperature": T, "weighting": "confidence"}}
        return [_stage("train", [{"loss": "ce", "weight": 0.1}, multi], epochs)]
    if row == "FSP":  # the paper's two steps: fit the FSP matrices, then train on the task
        if not s["maps"]:
            return None
        fsp = {"loss": "fsp", "student": s["maps"], "teacher": t["maps"]}
        return [_stage("fsp", [fsp], 1), _stage("train", [ce], epochs)]
    if method[row] is None:
        return None
    return [_stage("train", [ce, *method[row]], epochs)]


QUICK_TEACHERS = {"teacher": {"model": "cnn", "args": {"channels": [8, 16, 16], "hidden": 32, "image_size": 8}},
                  "second": {"model": "resnet", "args": {"widths": [4, 8], "blocks_per_stage": 1}}}


def cell_recipe(row: str, student: str, seed: int, epochs: int, teachers: dict[str, str],
                quick: bool = False) -> dict | None:
    """One cell's recipe; ``teachers``: weights of the teachers trained by ``train_teacher``."""
    stages = row_stages(row, student, epochs)
    if stages is None:
        return None
    base = load_recipe(demo_recipe()).model_dump(mode="json")
    recipe = {**base, "name": f"{row}-{student}-{seed}".replace(" ", "-").replace("(", "").replace(")", ""),
              "seed": seed, "student": STUDENTS[student], "stages": stages, "latency": False,
              "data": {**base["data"], "labelled": 55000, "val": 5000}}
    if row == "multi-teacher KD":
        recipe["teachers"] = {"second": {**SECOND_TEACHER, "weights": teachers["second"]}}
    if quick:  # digits: 8x8 images, tiny teachers, one epoch a stage
        recipe["data"] = {"source": "digits", "labelled": 1247, "val": 100}  # of 1,347 training images
        recipe["teacher"] = {**QUICK_TEACHERS["teacher"], "weights": teachers["teacher"]}
        recipe["student"] = ({"model": "cnn", "args": {"channels": [4, 8, 8], "image_size": 8}}
                             if student == "small CNN" else {"model": "mlp", "args": {"in_features": 64, "hidden": [32, 16]}})
        if row == "multi-teacher KD":
            recipe["teachers"]["second"] = {**QUICK_TEACHERS["second"], "weights": teachers["second"]}
        for stage in recipe["stages"]:
            stage["epochs"] = 1
            stage["eval_every"] = 1
    return decay_everything(recipe)


def train_teacher(role: str, runs_dir: Path, quick: bool) -> tuple[str, float]:
    """Train a teacher once (reused after): the ResNet of the multi-teacher row, or with
    ``quick`` a tiny one of either role; returns (weights path, test accuracy)."""
    name = f"{role}-teacher" + ("-quick" if quick else "")
    done = runs_dir / name / "summary.json"
    if not done.exists():
        base = load_recipe(demo_recipe()).model_dump(mode="json")
        recipe = {**base, "name": name, "seed": 0, "student": None, "latency": False,
                  "data": {**base["data"], "labelled": 0, "val": 5000},
                  "teacher": QUICK_TEACHERS[role] if quick else SECOND_TEACHER,
                  "stages": [{**_stage("teacher", [{"loss": "ce"}], 2 if quick else SECOND_TEACHER_EPOCHS),
                              "train": "teacher", "data": "full", "augment": {"shift": 2, "flip": True}}]}
        if quick:
            recipe["data"] = {"source": "digits", "labelled": 0, "val": 100}
        run(decay_everything(recipe), runs_dir=runs_dir, overwrite=True, progress=False)
    summary = json.loads(done.read_text())
    return str(runs_dir / name / "teacher.safetensors"), summary["test"]["teacher"]["accuracy"]


def last_val_accuracy(run_dir: Path) -> float | None:
    """The held-out accuracy at the end of the run's last stage."""
    for line in reversed((run_dir / "metrics.jsonl").read_text().splitlines()):
        record = json.loads(line)
        if "val" in record:
            return record["val"]["accuracy"]
    return None


def write_table(log: CellLog, out: Path, epochs: int, seeds: list[int], second: float | None) -> str:
    teacher = [a for a in log.values("teacher_accuracy") if a is not None]
    if not teacher:
        raise SystemExit(f"methods: no finished cells in {log.path}; run the benchmark first.")
    params = {s: next(iter(log.values("student_params", student=s)), None) for s in STUDENTS}
    header = " | ".join(f"{s} ({params[s]:,} params)" if params[s] else s for s in STUDENTS)
    lines = [
        f"Teacher: VGG-style CNN, test accuracy {100 * statistics.mean(teacher):.2f}% "
        f"({next(iter(log.values('teacher_params')), 0):,} params)"
        + (f"; second teacher of the multi-teacher row: ResNet, {100 * second:.2f}%." if second else "."),
        "",
        f"| method | {header} | held-out: " + " | held-out: ".join(STUDENTS) + " | epochs | s / run |",
        "|---|" + "---:|" * (2 * len(STUDENTS) + 2),
    ]
    for row in ROWS:
        cells = [mean_sd(log.values("accuracy", row=row, student=s)) for s in STUDENTS]
        held = [mean_sd(log.values("val_accuracy", row=row, student=s)) for s in STUDENTS]
        cells = [c if c != "-" or row_stages(row, s, epochs) else "n/a" for c, s in zip(cells, STUDENTS)]
        held = [c if c != "-" or row_stages(row, s, epochs) else "n/a" for c, s in zip(held, STUDENTS)]
        seconds = [f"{statistics.mean(v):.0f}" if (v := log.values("seconds", row=row, student=s)) else "-"
                   for s in STUDENTS]
        n_epochs = epochs + (1 if row == "FSP" else 0)
        lines.append(f"| {row} | " + " | ".join(cells + [h.split(" (")[0] for h in held])
                     + f" | {n_epochs} | {', '.join(seconds)} |")
    lines += ["", f"Test accuracy (%) at the last epoch, mean ± standard deviation over seeds {seeds} "
              f"(n = runs so far); held-out: the same on the 5,000 training images kept out of training. "
              f"{epochs} epoch{'s' if epochs != 1 else ''} over the other 55,000 images, all labelled, batch 128, SGD with Nesterov "
              f"momentum, cosine schedule, no augmentation; s / run: mean wall time per run for each student, "
              f"including the teacher's pass over the training images when the row is the first of its seed "
              f"to read that teacher layer (kept in memory for the later rows). "
              f"Wall time of the cells so far: {log.hours():.2f} h on this machine (2 CPU cores)."]
    return write_lines(lines, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs over the 55,000 training images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--quick", action="store_true", help="digits, one epoch a stage: a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table-only", action="store_true", help="write the table from the cells so far")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "methods_quick" if args.quick else "methods"
    log = CellLog(args.results / f"{stem}.jsonl", key=("row", "student", "seed"))
    runs_dir = args.results / "runs"
    second_acc = None
    if not args.table_only:
        teachers = {"second": None}
        if "multi-teacher KD" in args.rows:
            teachers["second"], second_acc = train_teacher("second", runs_dir, args.quick)
            print(f"second teacher: {100 * second_acc:.2f}%", flush=True)
        if args.quick:
            teachers["teacher"], _ = train_teacher("teacher", runs_dir, quick=True)
        # seed outermost: the teacher's outputs on a seed's split are computed once and reused
        for seed in args.seeds:
            for student in args.students:
                for row in args.rows:
                    recipe = cell_recipe(row, student, seed, args.epochs, teachers, args.quick)
                    if recipe is None or log.done(row=row, student=student, seed=seed):
                        continue
                    recipe["threads"] = args.threads
                    start = time.perf_counter()
                    result = run(recipe, runs_dir=runs_dir, overwrite=True, progress=False)
                    log.add({"row": row, "student": student, "seed": seed,
                             "accuracy": result.summary["test"]["student"]["accuracy"],
                             "val_accuracy": last_val_accuracy(result.run_dir),
                             "teacher_accuracy": result.summary["test"]["teacher"]["accuracy"],
                             "student_params": result.summary["test"]["student"]["params"],
                             "teacher_params": result.summary["test"]["teacher"]["params"],
                             "seconds": time.perf_counter() - start})
                    r = log.records[-1]
                    print(f"{row:>18} {student:>9} seed {seed}: {100 * r['accuracy']:.2f}% "
                          f"(held-out {100 * r['val_accuracy']:.2f}%, {r['seconds']:.0f} s)", flush=True)
    elif (runs_dir / "second-teacher" / "summary.json").exists():
        second_acc = json.loads((runs_dir / "second-teacher" / "summary.json").read_text())["test"]["teacher"]["accuracy"]
    print(write_table(log, args.results / f"{stem}.md", args.epochs, args.seeds, second_acc))


if __name__ == "__main__":
    main()
