"""Kill a run at random moments (SIGKILL), finish it, and check nothing was lost.

Each trial starts ``kdistill run`` on a recipe with every kind of state a checkpoint carries
(a teacher stage, CRD's memory bank, an L2 pull to an earlier stage, dropout, augmentation,
a checkpoint every 3 steps), kills it at a time drawn uniformly from [0, 1.05 x the
uninterrupted run's wall time], then finishes it the way a user would: ``--resume`` when the
unfinished run has a checkpoint, else the same command again. The finished run must hold
the same ``student.safetensors`` bytes and the same metrics as the uninterrupted run, and no
``.incomplete`` folder may be left. Writes ``bench/results/kill_anywhere.{jsonl,md}``.

    python bench/kill_anywhere.py --trials 40 --longer 3

``--longer K`` multiplies every stage's epochs by K, so that more of the run is training
(about 4 s of every run is the interpreter starting and the data loading).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from kdistill.train.checkpoint import has_checkpoint

RESULTS = Path(__file__).parent / "results"
RECIPE = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "resumable.yaml").read_text())


def scaled(recipe: dict, factor: int) -> dict:
    """The recipe with every stage's epochs multiplied by ``factor``."""
    return {**recipe, "stages": [{**s, "epochs": s.get("epochs", 1) * factor} for s in recipe["stages"]]}


def kdistill(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdistill.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def phase(runs: Path) -> str:
    """Where the run was when it died, read from what it left on disk."""
    final, partial = runs / RECIPE["name"], runs / f"{RECIPE['name']}.incomplete"
    if final.exists():
        return "complete"
    if not partial.exists():
        return "before the run directory"
    names = sorted((partial / "checkpoints").glob("ckpt-*.pt"))
    if not names:
        return "before the first checkpoint"
    stage = int(names[-1].name[6:8])
    return "after training" if stage == len(RECIPE["stages"]) else f"training stage {stage + 1}"


def finish(recipe: Path, runs: Path) -> tuple[int, str | None]:
    """Finish the run as a user would: (how many commands it took, the error that stopped it)."""
    commands = 0
    while not (runs / RECIPE["name"]).exists():
        partial = runs / f"{RECIPE['name']}.incomplete"
        resumable = has_checkpoint(partial / "checkpoints")
        proc = kdistill("run", "--resume", partial, "-q") if resumable else kdistill("run", recipe, "--runs-dir", runs, "-q")
        commands += 1
        if proc.wait() != 0:
            return commands, proc.stderr.read().strip().splitlines()[-1]
    return commands, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--longer", type=int, default=1, help="multiply every stage's epochs by this")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-anywhere-"))
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(scaled(RECIPE, args.longer)))
    started = time.perf_counter()
    reference = kdistill("run", recipe, "--runs-dir", work / "reference", "-q")
    assert reference.wait() == 0, reference.stderr.read()
    wall = time.perf_counter() - started
    ref = work / "reference" / RECIPE["name"]
    records = []
    for trial in range(args.trials):
        runs = work / f"trial-{trial}"
        delay = rng.uniform(0, 1.05 * wall)
        proc = kdistill("run", recipe, "--runs-dir", runs, "-q")
        time.sleep(delay)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        where = phase(runs) if killed else "complete"
        commands, error = finish(recipe, runs)
        done = runs / RECIPE["name"]
        same = error is None and ((done / "student.safetensors").read_bytes() == (ref / "student.safetensors").read_bytes()
                                  and (done / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text())
        left = sorted(p.name for p in runs.iterdir() if p.name.endswith(".incomplete"))
        record = {"trial": trial, "kill_at_s": round(delay, 2), "killed": killed, "phase": where,
                  "commands_to_finish": commands, "error": error, "identical": same, "incomplete_left": left,
                  "checkpoints_left": (done / "checkpoints").exists()}
        records.append(record)
        print(json.dumps(record), flush=True)
        shutil.rmtree(runs)
    shutil.rmtree(work)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kill_anywhere.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ok = [r for r in records if r["identical"] and not r["incomplete_left"] and not r["checkpoints_left"]]
    lines = [f"Uninterrupted run: {wall:.1f} s wall (process start included). {len(records)} trials, kill time "
             f"uniform in [0, {1.05 * wall:.1f}] s, seed {args.seed}, epochs x{args.longer}: {len(ok)} of "
             f"{len(records)} finished with the "
             "uninterrupted run's student.safetensors bytes and metrics.jsonl, no .incomplete and no checkpoints left.",
             "", "| where the kill found the run | trials | identical after finishing |", "|---|---:|---:|"]
    for where, count in sorted(Counter(r["phase"] for r in records).items()):
        same = sum(r["identical"] for r in records if r["phase"] == where)
        lines.append(f"| {where} | {count} | {same} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "kill_anywhere.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
