"""A causal language model distilled into a 2-layer sub-network of itself (make bench-lm).

    python bench/lm.py            # the table (the teacher is built first if missing, about 2.5 h)
    python bench/lm.py --blocks 1500 --epochs 3   # the second budget: a small transfer corpus
    python bench/lm.py --blocks 1500 --epochs 6 --val 64   # the third: each row keeps its best epoch
    python bench/lm.py --smoke    # a smoke run: tiny teacher, a few hundred blocks

The teacher is ``bench/lm_teacher.py``'s: a Llama-style model trained here on WordNet's glosses
(no pretrained causal LM can be installed offline). Every student is a 2-layer cut of it
(``from_teacher: {layers: 2, pick: block}``: the contiguous block of layers whose removal changes
the predictions least on a calibration batch is dropped), then trained with one budget fixed
before any row runs: the same transfer blocks, epochs, batch and optimiser for every row.

Rows: the teacher; the cut as it is; the cut trained with next-token cross-entropy alone (the
same budget); forward KL; reverse KL; JSD(0.5); forward KL plus hidden-state terms (the cut's
two layers fitted to the teacher's layers 2 and 5 through the taps); forward KL and the data's
cross-entropy mixed half and half (Hinton's alpha = 0.5); and a width-pruned cut
(fewer heads, respecting grouped-query attention, and MLP units, ranked on activations) with
forward KL, and that narrower cut with cross-entropy alone, its own baseline. Columns: held-out
perplexity (the fixed held-out glosses), agreement with the teacher's next-token choice, mean
token KL to the teacher, greedy tokens a second at batch 1 and 16 (with the teacher's, measured
in the same process, as a ratio), parameters, wall time.
Writes bench/results/lm.md and lm.json (another budget, more seeds or fewer rows: a file of
their own, e.g. lm-n1500e3.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import lm_teacher  # noqa: E402
from common import decay_everything, finished_summary, mean_sd, write_lines  # noqa: E402

LAYERS = "model.model.layers"
BLOCKS, EPOCHS, LR = 6000, 1, 1e-3  # the budget every student row trains on, fixed before the first row ran

def hidden_terms(teacher_layers: int) -> list[dict]:
    """The cut's two layers fitted to the teacher's, evenly spread (layers 2 and 5 of 6), by hint
    regression through the taps (equal widths: no adapter), as the error relative to the teacher's
    mean square: the residual stream's plain MSE was ~100x the KL here (0.1 x MSE: 27 against 0.32)."""
    pairs = zip((0, 1), (round((i + 1) * teacher_layers / 2) - 1 for i in range(2)))
    return [{"loss": "hint", "weight": 1.0, "args": {"normalize": True}, "name": f"hidden_{s}",
             "student": f"{LAYERS}.{s}", "teacher": f"{LAYERS}.{t}"} for s, t in pairs]


def rows(teacher_layers: int, heads: int, ffn: int) -> dict:
    """name -> (losses, from_teacher extras) of every student row."""
    forward = {"loss": "token_kd", "args": {"divergence": "forward_kl"}}
    return {"ce": ([{"loss": "token_ce"}], {}),
            "forward_kl": ([forward], {}),
            "reverse_kl": ([{"loss": "token_kd", "args": {"divergence": "reverse_kl"}}], {}),
            "jsd": ([{"loss": "token_kd", "args": {"divergence": "jsd", "beta": 0.5}}], {}),
            "forward_kl+hidden": ([forward, *hidden_terms(teacher_layers)], {}),
            "forward_kl+ce": ([{**forward, "weight": 0.5}, {"loss": "token_ce", "weight": 0.5}], {}),
            "forward_kl, width-pruned": ([forward], {"heads": heads, "ffn": ffn}),
            "ce, width-pruned": ([{"loss": "token_ce"}], {"heads": heads, "ffn": ffn})}


LABELS = {"teacher": "teacher (6 layers)", "cut": "2-layer cut, undistilled", "ce": "cut + cross-entropy only",
          "forward_kl": "cut + forward KL", "reverse_kl": "cut + reverse KL", "jsd": "cut + JSD(0.5)",
          "forward_kl+hidden": "cut + forward KL + hidden states (taps)",
          "forward_kl+ce": "cut + 0.5 forward KL + 0.5 cross-entropy",
          "forward_kl, width-pruned": "cut, half its heads (whole key/value groups) and MLP units, + forward KL",
          "ce, width-pruned": "the same narrower cut + cross-entropy only"}
NARROW = {"forward_kl, width-pruned": "ce, width-pruned"}  # the narrower cut's distilled row -> its own baseline


def distilled_cut(names) -> list[str]:
    """The distilled rows of the 2-layer cut: the ones the done-when judges against ``ce``."""
    return [r for r in names if r != "ce" and r not in NARROW and r not in NARROW.values()]


def row_recipe(row: str, spec: tuple, teacher: Path, budget: dict, seed: int, cache: Path) -> dict:
    """One student row. The teacher's outputs come from a disk cache shared by every row of a seed
    (same teacher, same transfer blocks): the first row that reads the teacher builds it, with the
    taps of the hidden-state row, and the others read it back (float32, so no row sees a rounded
    teacher)."""
    losses, narrow = spec
    return {"name": f"lm-{row.replace(',', '').replace(' ', '-').replace('+', '-')}-s{seed}", "seed": seed,
            "device": "auto", "checkpoint": {"every": 200},
            "data": {**lm_teacher.data_section(teacher), "transfer": budget["blocks"], "val": budget.get("val", 0)},
            "teacher": {"model": "hf_causal", "args": {"path": str(teacher)}},
            "student": {"from_teacher": {"layers": 2, "pick": "block", **narrow}},
            "stages": [{"name": "distil", "data": "transfer", "epochs": budget["epochs"], "batch_size": budget["batch"],
                        "optimizer": {"name": "adamw", "lr": budget["lr"], "weight_decay": 0.01},
                        "schedule": {"name": "cosine", "warmup_epochs": 0.05}, "grad_clip": 1.0,
                        "cache": {"dir": str(cache), "dtype": "float32"}, "eval_every": 1,
                        "keep_best": bool(budget.get("val")),
                        "loss": losses}]}


def teacher_id(teacher: Path) -> str:
    """The first hex digits of the teacher's weights' SHA-256: rows are named by the teacher they distil."""
    import hashlib

    return hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()[:8]


def budget_tag(budget: dict) -> str:
    """What names a budget in row and file names: ``n6000e1`` (blocks, epochs), ``-lr0.003`` added
    when the learning rate is not the fixed one, ``-best64`` when every row keeps its best epoch on
    64 validation blocks."""
    return (f"n{budget['blocks']}e{budget['epochs']}" + (f"-lr{budget['lr']:g}" if budget["lr"] != LR else "")
            + (f"-best{budget['val']}" if budget.get("val") else ""))


def run_row(row: str, spec: tuple, teacher: Path, budget: dict, seed: int, runs: Path) -> dict:
    from kdistill import run

    recipe = decay_everything(row_recipe(row, spec, teacher, budget, seed, runs / "teacher-cache"))
    # a row of another teacher or budget is not read back
    recipe["name"] += f"-{budget_tag(budget)}-{teacher_id(teacher)}"
    finished = finished_summary(runs / recipe["name"], recipe)  # resumable bench: a finished row is read back
    if finished:
        return finished
    done = runs / recipe["name"] / "summary.json"
    partial = runs / f"{recipe['name']}.incomplete"
    started = time.time()
    result = run(recipe, runs_dir=runs, resume=partial if (partial / "recipe.yaml").exists() else None,
                 overwrite=True)
    summary = {**result.summary, "wall_s": time.time() - started}
    done.write_text(json.dumps(summary, indent=2))
    return summary


def table(results: dict, budget: dict, seeds: list[int]) -> list[str]:
    """The markdown table: mean ± sd over the seeds of every row."""
    def cells(role_runs, key, scale=1.0):
        return mean_sd([m[key] for m in role_runs if key in m], scale)

    lines = ["| model | held-out perplexity | agreement w/ teacher (%) | token KL to teacher | tokens/s b=1 "
             "(x teacher) | tokens/s b=16 (x teacher) | params | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    first = next(iter(results.values()))
    for role in ("teacher", "cut"):
        runs = [s["test"][role] for s in first]
        lines.append(_line(LABELS[role], runs, cells, first))
    for row, summaries in results.items():
        lines.append(_line(LABELS[row], [s["test"]["student"] for s in summaries], cells, summaries))
    lines += ["", f"Budget, the same for every student row: {budget['blocks']:,} transfer blocks of "
              f"{lm_teacher.BLOCK} tokens, {budget['epochs']} epoch(s), batch {budget['batch']}, AdamW lr "
              f"{budget['lr']}; seeds {seeds} (mean ± sd over them; n=1 shows sd 0)."
              + (f" Every row ends on its best epoch by perplexity on {budget['val']} validation blocks drawn from "
                 "the training blocks, apart from the transfer set (keep_best), not on the held-out texts."
                 if budget.get("val") else "")]
    return lines


def _line(label, runs, cells, summaries) -> str:
    ratio = lambda key: mean_sd([r[key] / s["test"]["teacher"][key] for r, s in zip(runs, summaries)  # noqa: E731
                                 if key in r], 1.0)
    trained = label not in (LABELS["teacher"], LABELS["cut"])  # neither is trained by a row
    wall = mean_sd([s.get("wall_s", 0) for s in summaries], 1.0) if trained else "-"
    return (f"| {label} | {cells(runs, 'perplexity')} | {cells(runs, 'agreement', 100)} | "
            f"{cells(runs, 'kl_to_teacher')} | {cells(runs, 'tokens_per_s_b1')} ({ratio('tokens_per_s_b1')}) | "
            f"{cells(runs, 'tokens_per_s_b16')} ({ratio('tokens_per_s_b16')}) | {int(runs[0]['params']):,} | {wall} |")


def gap_closed(results: dict, teacher_ppl: float) -> list[str]:
    """The done-when figure: (ppl_ce - ppl_kd) / (ppl_ce - ppl_teacher) for the best distilled row
    of the 2-layer cut; and the width-pruned cut's, against its own cross-entropy row, when both ran."""
    mean = lambda row: sum(s["test"]["student"]["perplexity"] for s in results[row]) / len(results[row])  # noqa: E731
    ce = mean("ce")
    best = min(distilled_cut(results), key=mean)
    gap = ce - teacher_ppl
    closed = (ce - mean(best)) / gap if gap else float("nan")
    speed = [s["test"]["student"].get("speedup_b16") for s in results[best]]
    lines = ["", f"Best distilled row: {LABELS[best]} (perplexity {mean(best):.2f}); cross-entropy only {ce:.2f}; "
             f"teacher {teacher_ppl:.2f}. Gap to the teacher: {gap:.2f} = {100 * gap / teacher_ppl:.0f}% of the "
             f"teacher's perplexity (target >= 15%). Gap closed by distillation: {100 * closed:.0f}% (target >= 60%). "
             f"Speed at batch 16: {', '.join(f'{v:.2f}x' for v in speed if v)} the teacher's (target >= 1.8x)."]
    for row, base in NARROW.items():
        if row in results and base in results:
            narrow_gap = mean(base) - teacher_ppl
            share = (mean(base) - mean(row)) / narrow_gap if narrow_gap else float("nan")
            lines += ["", f"{LABELS[row]}: perplexity {mean(row):.2f} against {mean(base):.2f} with cross-entropy "
                      f"alone; gap closed {100 * share:.0f}%."]
    return lines


def results_name(budget: dict, seeds: list[int], partial: bool) -> str:
    """``lm.md`` for the whole table on the fixed budget and seed 0; another budget, more seeds or a
    subset of rows get a file of their own (``lm-n6000e3.md``, ``lm-n6000e1-lr0.003.md``,
    ``lm-seeds.md``, ``lm-partial.md``)."""
    tag = budget_tag(budget)
    parts = [tag] if tag != budget_tag({"blocks": BLOCKS, "epochs": EPOCHS, "lr": LR}) else []
    parts += ["seeds"] if seeds != [0] else []
    parts += ["partial"] if partial and not parts else []
    return "-".join(["lm", *parts]) + ".md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=None, help="default bench/lm_teacher (smoke: its own folder)")
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="transfer blocks every student row trains on")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs over them")
    parser.add_argument("--lr", type=float, default=LR, help="AdamW's learning rate, every student row's")
    parser.add_argument("--val", type=int, default=0, help="training blocks held out, on which every row keeps "
                        "its best epoch (keep_best; 0: every row ends on its last epoch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", type=Path, default=None, help="default bench/results/runs (smoke: runs-smoke)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--smoke", action="store_true", help="a tiny teacher and budget, to check the script")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                        help="the student rows to run, of: " + ", ".join(rows(6, 4, 8)) + " (default: all; 'ce' "
                             "and one distilled row of the 2-layer cut are needed for the gap; finished rows are read back)")
    args = parser.parse_args()
    names = list(rows(6, 4, 8))  # the row names (the teacher's sizes only set their arguments)
    chosen = args.rows or names
    unknown = [r for r in chosen if r not in names]
    distilled = distilled_cut(names)
    if unknown or "ce" not in chosen or not set(chosen) & set(distilled):  # checked before anything is built
        parser.error(f"--rows: {unknown or chosen}: give 'ce' and at least one of {distilled}")
    budget = {"blocks": args.blocks, "epochs": args.epochs, "batch": 16, "lr": args.lr, "val": args.val}
    if args.smoke:  # a smoke run keeps its teacher and rows apart from the real ones
        budget["blocks"] = 200
    args.teacher = args.teacher or HERE / ("lm_teacher-smoke" if args.smoke else "lm_teacher")
    args.runs = (args.runs or HERE / "results" / ("runs-smoke" if args.smoke else "runs")).resolve()
    if not (args.teacher / "teacher.json").exists():
        lm_teacher.main(["--out", str(args.teacher), "--runs", str(args.runs), *(["--smoke"] if args.smoke else [])])
    info = json.loads((args.teacher / "teacher.json").read_text())
    config = info["config"]
    groups = config["num_attention_heads"] // config["num_key_value_heads"]  # query heads a key/value head
    specs = rows(config["num_hidden_layers"], max(groups, config["num_attention_heads"] // 2 // groups * groups),
                 config["intermediate_size"] // 2)
    order = ["ce", "forward_kl+hidden", *[r for r in specs if r not in ("ce", "forward_kl+hidden")]]  # most taps first
    ran = {row: [run_row(row, specs[row], args.teacher, budget, seed, args.runs) for seed in args.seeds]
           for row in order if row in chosen}
    results = {row: ran[row] for row in specs if row in ran}
    first = next(iter(results.values()))
    teacher_ppl = sum(s["test"]["teacher"]["perplexity"] for s in first) / len(first)
    lines = ["# Causal language model: a 6-layer teacher into 2-layer sub-networks of itself", "",
             f"Teacher: `bench/lm_teacher.py` (Llama-style, {info['params']:,} parameters, BPE vocabulary of "
             f"{lm_teacher.VOCAB:,}, trained {info['epochs']} epoch(s) on WordNet's glosses in "
             f"{info.get('train_seconds', info['seconds']) / 3600:.1f} h of training wall time; held-out "
             f"perplexity {info['held_out_perplexity']:.2f}).", "",
             *table(results, budget, args.seeds), *gap_closed(results, teacher_ppl)]
    out = args.results / ("lm-smoke.md" if args.smoke else results_name(budget, args.seeds,
                                                                          set(chosen) != set(names)))
    print(write_lines(lines, out))
    out.with_suffix(".json").write_text(json.dumps({"budget": budget, "teacher": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
