"""Write docs/benchmarks.md (and its plots in docs/benchmarks/img/) from the results in bench/results/.

    python docs/bench_pages.py          # write the page and the plots
    python docs/bench_pages.py --check  # exit 1 when the committed page differs from what the results give

Every table is read from a results file; the prose around the tables is kept here. Cells read
mean ± standard deviation only where a row ran over more than one seed; the number of runs is
stated once above each table. ``--check`` compares the markdown only: the plots are rendered by
matplotlib, whose bytes depend on its version and fonts, so they are rewritten by a plain run and
only their presence is checked.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = "docs/benchmarks.md"
IMG = "docs/benchmarks/img"


def _mean_sd(values, digits=2, scale=1.0):
    values = [v * scale for v in values]
    m = statistics.fmean(values)
    if len(values) > 1:
        sd = f"{statistics.stdev(values):.{digits}f}"
        if sd.strip("0.") != "":  # a spread that rounds to zero is not written as "± 0.00"
            return f"{m:.{digits}f} ± {sd}"
    return f"{m:.{digits}f}"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _table(header, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _seeds(rows):
    seeds = sorted({r["seed"] for r in rows})
    return seeds, (f"{len(seeds)} seeds ({', '.join(map(str, seeds))})" if len(seeds) > 1 else f"one run (seed {seeds[0]})")


# ---------------------------------------------------------------- label efficiency
def label_efficiency(res):
    rows = _jsonl(res / "label_efficiency.jsonl")
    seeds, seed_text = _seeds(rows)
    names = list(dict.fromkeys(r["row"] for r in rows))
    order = ["labels alone", "KD", "hint", "VID", "shallow", "deep", "composite"]
    names = [n for n in order if n in names] + [n for n in names if n not in order]
    labels = list(dict.fromkeys(r["labels"] for r in rows))
    acc = collections.defaultdict(list)
    for r in rows:
        acc[r["row"], r["labels"]].append(r["accuracy"])
    teacher = rows[0]["teacher_accuracy"] * 100
    params = rows[0]["student_params"]
    table = _table(["student"] + [f"{lab} labels" for lab in labels],
                   [[n] + [_mean_sd(acc[n, lab], scale=100) if acc[n, lab] else "-" for lab in labels] for n in names])
    means = {k: statistics.fmean(v) * 100 for k, v in acc.items()}
    data = {"names": names, "labels": labels, "means": means}
    head = (f"KD, {labels[0]} labels", f"{means['KD', labels[0]]:.2f}% against {means['labels alone', labels[0]]:.2f}% for labels alone")
    return seed_text, teacher, params, table, data, head


# ---------------------------------------------------------------- methods
def methods(res):
    rows = _jsonl(res / "methods.jsonl")
    seeds, seed_text = _seeds(rows)
    names = list(dict.fromkeys(r["row"] for r in rows))
    students = list(dict.fromkeys(r["student"] for r in rows))
    cell = collections.defaultdict(list)
    params = {}
    for r in rows:
        cell[r["row"], r["student"]].append(r)
        params[r["student"]] = r["student_params"]
    def col(n, s, key, digits=2, scale=100):
        got = cell.get((n, s))
        return _mean_sd([r[key] for r in got], digits, scale) if got else "n/a"
    def sec(n, s):
        got = cell.get((n, s))
        return f"{statistics.fmean(r['seconds'] for r in got):.0f}" if got else "-"
    header = (["method"] + [f"{s} ({params[s]:,} params)" for s in students]
              + [f"held-out: {s}" for s in students] + ["s / run"])
    table = _table(header, [[n] + [col(n, s, "accuracy") for s in students] + [col(n, s, "val_accuracy") for s in students]
                            + [", ".join(sec(n, s) for s in students)] for n in names])
    three = _jsonl(res / "methods-3-epochs" / "methods.jsonl")
    val3 = {r["row"]: r["val_accuracy"] * 100 for r in three if r["student"] == students[0]}
    mean = lambda n, s, k="accuracy": statistics.fmean(r[k] for r in cell[n, s]) * 100
    gain = [mean("KD", s) - mean("no distillation", s) for s in students]
    teacher = rows[0]["teacher_accuracy"] * 100
    head = (f"KD, {students[0]}", f"{mean('KD', students[0]):.2f}% against {mean('no distillation', students[0]):.2f}% undistilled")
    return seed_text, table, val3, gain, teacher, head, students


# ---------------------------------------------------------------- text
def _text_rows(part, static):
    out = []
    for name, r in part["rows"].items():
        mb = r["weight_bytes"] / 2**20
        row = [name, f"{r['params'] / 1e6:.1f}M", f"{mb:.1f}", f"{r['sentences_per_s']:.0f}",
               f"{r['speedup']:.1f}x" if static else f"{r['speedup']:.2f}x"]
        if not static:
            row.append(f"{r['mean_cosine']:.3f}" if "mean_cosine" in r else "1")
        row.append(f"{r['neighbour_overlap@10'] * 100:.1f}" if "neighbour_overlap@10" in r else "100")
        row += [f"{r[f'prototype@{k}'] * 100:.1f}" for k in (1, 5, 10, 50)]
        row += [f"{r[f'logreg@{k}'] * 100:.1f}" for k in (1, 5, 10, 50)]
        row.append(f"{r['logreg@10'] / part['rows']['teacher']['logreg@10']:.3f}")
        out.append(row)
    header = ["model", "params", "MB", "sentences/s", "speed-up"] + ([] if static else ["cosine to teacher"]) + [
        "10-NN overlap", "centre@1", "centre@5", "centre@10", "centre@50",
        "logreg@1", "logreg@5", "logreg@10", "logreg@50", "logreg@10 / teacher's"]
    return _table(header, out)


# ---------------------------------------------------------------- language model
LM_ROWS = {
    "ce": "cut + cross-entropy only",
    "forward_kl": "cut + forward KL",
    "reverse_kl": "cut + reverse KL",
    "jsd": "cut + JSD(0.5x)",
    "forward_kl+hidden": "cut + forward KL + hidden states (taps)",
    "forward_kl+ce": "cut + 0.5 forward KL + 0.5 cross-entropy",
    "forward_kl, width-pruned": "cut, half its heads (whole key/value groups) and MLP units, + forward KL",
    "ce, width-pruned": "the same narrower cut + cross-entropy only",
}


def _lr(lr):
    return f"{lr:.0e}".replace("e-0", "e-")


def _lm(path):
    return json.loads(path.read_text())


def _lm_table(lm):
    res = lm["results"]
    first = next(iter(res.values()))
    def speed(runs, who, b):
        vals = [r["test"][who][f"tokens_per_s_b{b}"] for r in runs]
        ratio = [r["test"][who][f"tokens_per_s_b{b}"] / r["test"]["teacher"][f"tokens_per_s_b{b}"] for r in runs]
        r = _mean_sd(ratio).split(" ± ")
        return f"{_mean_sd(vals)} ({r[0]}x{' ± ' + r[1] if len(r) > 1 else ''})"
    def row(name, runs, who, teacher=False):
        t = [r["test"][who] for r in runs]
        m = lambda k, s=1.0: _mean_sd([x[k] for x in t], 2, s)
        return [name, m("perplexity"), "-" if teacher else m("agreement", 100), "-" if teacher else m("kl_to_teacher"),
                speed(runs, who, 1), speed(runs, who, 16), f"{t[0]['params']:,}"]
    rows = [row("teacher (6 layers)", first, "teacher", True), row("2-layer cut, undistilled", first, "cut")]
    rows += [row(LM_ROWS.get(k, k), v, "student") for k, v in res.items()]
    return _table(["model", "held-out perplexity", "agreement w/ teacher (%)", "token KL to teacher",
                   "tokens/s b=1 (x teacher)", "tokens/s b=16 (x teacher)", "params"], rows)


def _sp(lm, key):
    return statistics.fmean(r["test"]["student"]["speedup_b16"] for r in lm["results"][key])


def _ppl(lm, key):
    return statistics.fmean(r["test"]["student"]["perplexity"] for r in lm["results"][key])


def _closed(lm, key, base="ce"):
    teacher = lm["teacher"]["held_out_perplexity"]
    return (_ppl(lm, base) - _ppl(lm, key)) / (_ppl(lm, base) - teacher)


# ---------------------------------------------------------------- speed
def speed(res):
    runs = json.loads((res / "speed.json").read_text())
    rows = []
    for r in runs:
        a, b, c = (r[k]["epoch_s"] for k in ("alone", "live", "cached"))
        build = r["cached"]["build_s"]
        ten = 10 * b / (10 * c + build)
        mb = " / ".join(f"{r[k]['peak_bytes'] / 2**20:.0f}" for k in ("alone", "live", "cached"))
        rows.append([r["teacher"], f"{r['ratio']:.1f}x", f"{a:.2f}", f"{b / a:.2f}x", f"{c / a:.2f}x",
                     f"{build / a:.2f} epochs", f"{ten:.2f}x", mb])
    table = _table(["teacher", "teacher / student compute", "(a) student alone s/epoch", "(b) live teacher", "(c) cached",
                    "cache build", "(b) / (c), 10 epochs incl. build", "peak memory a / b / c (MB)"], rows)
    return runs, table, rows


# ---------------------------------------------------------------- data (markdown only)
def data(res):
    text = (res / "data.md").read_text().splitlines()
    def md_rows(title_start):
        start = next(i for i, line in enumerate(text) if line.startswith(title_start))
        out = []
        for line in text[start + 2:]:
            if not line.startswith("|"):
                break
            out.append([c.strip() for c in line.strip("|").split("|")])
        return out
    epochs = md_rows("| source | train samples | workers |")
    targets = md_rows("| source | samples/s (2 workers) |")
    by = collections.defaultdict(dict)
    for r in epochs:
        by[r[0]][r[2]] = r
    ratio = {r[0]: r[3] for r in targets}
    rows = []
    for src in [s for s in by if ", 10x" not in s]:
        rate = " / ".join(by[src][w][3] for w in ("0", "1", "2"))
        big = by.get(src.split(" (")[0] + ", 10x")
        mem = " / ".join(f"{by[src][w][6]} -> {big[w][6]}" for w in ("0", "1", "2")) if big else "-"
        rows.append([src.split(" (")[0], rate, f"**{ratio[src]}**" if src in ratio else "1", mem])
    table = _table(["source", "samples/s, 0 / 1 / 2 workers", "2 workers vs (a)", "peak anon MB 70k -> 700k, 0 / 1 / 2 workers"],
                   rows, ["---", "---", "---:", "---"])
    mem = [float(r[4]) for r in md_rows("| source | workers | 70k MB |")]
    jpeg = [int(r[2]) for r in md_rows("| workers | images/s | images/s per worker |")]
    return table, rows, ratio, (f"{min(mem):.2f}", f"{max(mem):.2f}"), (min(jpeg), max(jpeg))


# ---------------------------------------------------------------- plots
def plots(out, le, lm_tables):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    meta = {"Software": None}
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    x = [float(lab.rstrip("%")) for lab in le["labels"]]
    for n in le["names"]:
        ax.plot(x, [le["means"][n, lab] for lab in le["labels"]], marker="o", label=n)
    ax.set_xscale("log"); ax.set_xticks(x); ax.set_xticklabels(le["labels"])
    ax.set_xlabel("share of the 55,000 training labels"); ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8); ax.grid(alpha=0.3); fig.tight_layout()
    fig.savefig(out / "label_efficiency.png", metadata=meta); plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for title, lm in lm_tables:
        teacher = lm["teacher"]["held_out_perplexity"]
        xs, ys = [], []
        items = list(lm["results"].items())
        for key, runs in items:
            xs.append(statistics.fmean(r["test"]["student"]["tokens_per_s_b16"] / r["test"]["teacher"]["tokens_per_s_b16"] for r in runs))
            ys.append(statistics.fmean(r["test"]["student"]["perplexity"] for r in runs) - teacher)
        colour = ax.scatter([], []).get_facecolor()[0]
        for (key, _), x_, y_ in zip(items, xs, ys):
            ax.scatter([x_], [y_], color=colour, marker="x" if key.startswith("ce") else "o")
        ax.scatter([], [], color=colour, marker="o", label=f"{title}: distilled")
        ax.scatter([], [], color=colour, marker="x", label=f"{title}: cross-entropy only")
    ax.set_xlabel("tokens/s at batch 16, x teacher"); ax.set_ylabel("held-out perplexity - teacher's")
    ax.legend(fontsize=8); ax.grid(alpha=0.3); fig.tight_layout()
    fig.savefig(out / "lm_gap_vs_speed.png", metadata=meta); plt.close(fig)


# ---------------------------------------------------------------- the page
DEMO = """## The demo

`make demo` (`kdistill demo`, `kdistill/recipes/demo.yaml`), one
run. Fashion-MNIST: 600 labelled training images (60 a class, stratified), the other 59,400
training images as the unlabelled transfer set (their labels are replaced by -1 before any loss
sees them), the 10,000 test images for the table. The teacher is a VGG-style CNN shipped as
`kdistill/recipes/fmnist_teacher.safetensors`, which
`kdistill/recipes/fmnist_teacher.yaml` reproduces
(`make teacher`). Stages: the baseline (the student on the 600 labels alone), distillation on
the transfer set (KD + hint, the teacher's outputs computed once), fine-tuning on the labels.
The demo writes no file under `bench/results/`: this table is the one `kdistill demo` prints.

| model | test accuracy | agreement w/ teacher | KL to teacher | ECE | params | CPU ms/sample b=1 | CPU ms/sample b=256 |
|---|---:|---:|---:|---:|---:|---:|---:|
| teacher | 94.27% | - | - | 0.0136 | 1,895,338 | 1.273 | 0.360 |
| student without distillation | 83.23% | 84.59% | 0.4513 | 0.0767 | 54,778 | 0.233 | 0.060 |
| student (distilled) | 93.02% | 95.99% | 0.0492 | 0.0179 | 54,778 | 0.228 | 0.062 |

The distilled student keeps 98.7% of the teacher's accuracy with 35x fewer parameters, 9.8
points above the same student trained on the 600 labels alone. Most of the run's time goes to
the distillation stage. Latencies are medians of repeated timings. The run reads the teacher's
preprocessing from its weights (`data.normalize: auto`) and prints the teacher's accuracy before
and after it on 2,000 test images spread over the test set (41.2% on raw [0, 1] pixels, 94.05%
standardised), so a teacher fed inputs unlike its training data shows at once.
"""


def render(root: Path = ROOT) -> str:
    res = root / "bench" / "results"
    le_seeds, le_teacher, le_params, le_table, le_data, le_head = label_efficiency(res)
    me_seeds, me_table, val3, gain, me_teacher, me_head, students = methods(res)
    text = json.loads((res / "text.json").read_text())
    tr, st = text["transformer"], text["static"]
    d2 = tr["rows"]["2 layers, distilled"]
    t2 = tr["rows"]["teacher"]
    d3 = tr["rows"]["3 layers, distilled"]
    srow = st["rows"]
    sr = lambda name: srow[name]["logreg@10"] / srow["teacher"]["logreg@10"] * 100
    def m2v(w):  # model2vec's logreg@10 against kdistill's, as the table rounds them
        d = round(srow[f"model2vec {w} (distill + tokenlearn)"]["logreg@10"] * 100, 1) - round(srow[f"static {w}, distilled"]["logreg@10"] * 100, 1)
        return "tie" if abs(d) < 0.05 else f"are {abs(d):.1f} points {'above' if d > 0 else 'below'}"
    lead = all(srow[f"static {w}, distilled"][k] > srow[f"model2vec {w} (distill + tokenlearn)"][k]
               for w in (64, 256, 384) for k in ("prototype@10", "neighbour_overlap@10"))
    speeds = [r["speedup"] for n, r in srow.items() if n != "teacher"]
    lm1, lm1s = _lm(res / "lm.json"), _lm(res / "lm-seeds.json")
    lm2, lm2s = _lm(res / "lm-n1500e3.json"), _lm(res / "lm-n1500e3-seeds.json")
    lm3, lm3s = _lm(res / "lm-n1500e6-best64.json"), _lm(res / "lm-n1500e6-best64-seeds.json")
    lm3b = _lm(res / "lm-n1500e3-best64.json")
    teacher_ppl = lm1["teacher"]["held_out_perplexity"]
    sp_runs, sp_table, sp_rows = speed(res)
    da_table, da_rows, da_ratio, da_mem, da_jpeg = data(res)
    kills = _jsonl(res / "kill_anywhere.jsonl")
    same = sum(1 for k in kills if k["identical"])
    pct = lambda x: f"{x * 100:.0f}%"
    s3 = lm3s["results"]
    seed_closed = []
    for i in range(len(s3["ce"])):
        ce, kd = s3["ce"][i]["test"]["student"]["perplexity"], s3["forward_kl+hidden"][i]["test"]["student"]["perplexity"]
        seed_closed.append(pct((ce - kd) / (ce - teacher_ppl)))
    n_lm3 = len(s3["ce"])

    headline = _table(["benchmark", "headline", "result"], [
        ["[label efficiency](#label-efficiency)", le_head[0], le_head[1]],
        ["[methods](#methods)", me_head[0], me_head[1]],
        ["[sentence encoder](#sentence-encoder)", "2-layer student, logreg@10 and speed",
         f"{d2['logreg@10'] / t2['logreg@10'] * 100:.1f}% of the teacher at {d2['speedup']:.2f}x its speed"],
        ["[static embeddings](#static-embeddings)", "static 256, distilled, logreg@10",
         f"{st['rows']['static 256, distilled']['logreg@10'] / st['rows']['teacher']['logreg@10'] * 100:.1f}% of the teacher at {st['rows']['static 256, distilled']['speedup']:.0f}x its speed"],
        ["[causal language model](#causal-language-model)", "gap to the teacher closed, budgets 1 / 2 / 3",
         f"{pct(_closed(lm1, 'forward_kl'))} / {pct(_closed(lm2, 'forward_kl+hidden'))} / {pct(_closed(lm3s, 'forward_kl+hidden'))}"],
        ["[teacher caching](#teacher-caching)", f"10 epochs, live / cached, {sp_rows[-1][0]}", sp_rows[-1][6]],
        ["[data bigger than memory](#data-bigger-than-memory)", "2 workers vs in memory, lowest source",
         min(da_ratio.values())],
        ["[crash and resume](#crash-and-resume)", "killed runs finished identical", f"{same} of {len(kills)}"],
    ], ["---", "---", "---:"])

    lm_ = le_data["means"]
    full = le_data["labels"][-1]
    add = [lm_[n, full] - lm_["labels alone", full] for n in ("KD", "hint", "VID", "composite")]
    le_add = (min(add), max(add))
    le_shallow = (min(lm_["shallow", lab] for lab in le_data["labels"]), max(lm_["shallow", lab] for lab in le_data["labels"]))
    le_deep_gap = lm_["KD", full] - lm_["deep", full]
    first = le_data["labels"][0]
    le_deep_best = (f" is the best row at {first} but" if max(le_data["names"], key=lambda n: lm_[n, first]) == "deep" else "")
    le_worst1 = min(le_data["means"][n, le_data["labels"][0]] for n in le_data["names"] if n != "labels alone")
    le_best1 = max(le_data["means"][n, le_data["labels"][0]] for n in le_data["names"] if n != "labels alone")
    parts = [f"""# Benchmarks

<!-- Generated by docs/bench_pages.py from bench/results/; edit the script, not this page. -->

Every figure here was measured on a 2-core CPU machine by the command named with its section;
each benchmark writes its full table, per-seed rows included, to `bench/results/`, and
`python docs/bench_pages.py` writes this page from those files (`--check` says when it is stale).
Speeds are ratios measured in the same process as the teacher's; absolute rates depend on the
machine. Where a table ran over several seeds, its cells read mean ± standard deviation over
them (n stated once above each table; a cell without ± read the same, to the digits shown, in
every seed); where it ran once, they are that run.

{headline}

{DEMO}
## Label efficiency

`make bench-labels` (`bench/label_efficiency.py`; `bench/results/label_efficiency.md`).
Fashion-MNIST, the demo's teacher ({le_teacher:.2f}%) and student ({le_params:,} parameters);
{", ".join(le_data["labels"][:-1])} and {le_data["labels"][-1]} of the 55,000 training images labelled
(5,000 held out for every choice); distillation: 5 epochs over the 55,000 images; last-epoch
test accuracy (%), {le_seeds}.

{le_table}

![Test accuracy against the share of labels](benchmarks/img/label_efficiency.png)

- Every distilled row beats labels alone at {le_data["labels"][0]} of the labels by at least
  {le_worst1 - le_data["means"]["labels alone", le_data["labels"][0]]:.1f} points, and the best of them
  at {le_data["labels"][0]} ({le_best1:.2f}%) is more accurate than the same student trained on all
  55,000 labels without distillation ({le_data["means"]["labels alone", le_data["labels"][-1]]:.2f}%):
  the teacher's soft targets on the unlabelled images carry most of what the labels would.
  With all the labels, KD, hint, VID and the composite objective still add {le_add[0]:.1f} to
  {le_add[1]:.1f} points.
- **Shallow** (the student learns the teacher's 64-d PCA space and classifies by distance to
  class prototypes) does not improve with more labels: its accuracy is that of a
  nearest-prototype classifier in the distilled space ({le_shallow[0]:.2f} to {le_shallow[1]:.2f}% at
  every share), while the other rows fine-tune a full softmax head on the labels.
- **Deep** (VID + attention transfer in distillation, one-vs-rest and scatter terms in
  fine-tuning){le_deep_best} trails plain KD at {le_data["labels"][-1]} by {le_deep_gap:.1f} points; which of
  its terms costs the accuracy was not isolated.
- No hyper-parameter was chosen on the test set: the 5,000 held-out training images served every
  choice. The recipes: `recipes/fmnist_{{shallow,deep,composite}}.yaml`; the objectives:
  [the objective](objective.md).

## Methods

`make bench-methods` (`bench/methods.py`; `bench/results/methods.md`). Every method on
Fashion-MNIST with all labels, for a {students[0]} and an {students[1]} student: cross-entropy plus each
method's term at its published weight (RepDistiller's CIFAR values, rescaled where this project
normalises a loss differently; the results file says how). 1 epoch over 55,000 images (5,000
held out; FSP runs 2, one fitting its matrices, one of cross-entropy), batch 128, SGD with
Nesterov momentum, cosine schedule, no augmentation; {me_seeds}. Teacher: the demo's
({me_teacher:.2f}%); second teacher of the multi-teacher row: a ResNet. Test and held-out
accuracy (%); s / run: mean wall time per run for each student; n/a: the method needs a layer
the student does not have.

{me_table}

- Plain **KD beats the undistilled student for both students** ({gain[0]:+.2f} points for the
  {students[0]}, {gain[1]:+.2f} for the {students[1]}).
- **Not a short-budget effect**: a 3-epoch check (seed 0, {students[0]}, held-out images only:
  `bench/results/methods-3-epochs/methods.md`) gives no distillation {val3["no distillation"]:.2f};
  {", ".join(f"{k} {v:.2f}" for k, v in val3.items() if k != "no distillation")}: KD's gain
  grows to {val3["KD"] - val3["no distillation"]:+.2f}, while VID, PKT, CC, AT and FSP stay where they
  were. With every image labelled, the feature and relation terms add nothing here that the
  labels do not.
- **VID** and **CC** gain nothing at 1 or 3 epochs (CC's weight of 100 is this project's
  setting; no sweep was run).
- **PKT, RKD and CRD** compare the samples of a batch through the tapped embedding. The MLP's
  tap is its 128-wide penultimate layer, as in the papers; the small CNN has none, so its tap is
  the flattened 64 x 7 x 7 map, on which these terms gain nothing. A pooled embedding or a projection was not tried.
- **FSP** follows the paper's two steps (one epoch fitting the FSP matrices, then
  cross-entropy); its start does worse than a random one at 1 and 3 epochs.
- **DKD** uses mdistiller's CIFAR alpha 1 and beta 8 without its 20-epoch warm-up of the DKD
  term, which runs of 1 to 3 epochs cannot have; at 3 epochs the {students[0]}'s held-out accuracy
  is {val3["DKD"]:.2f} against {val3["no distillation"]:.2f}.

## Sentence encoder

`make bench-text` (`bench/text.py`; `bench/results/text.md`), the recipe
`recipes/text/minilm_to_2layer.yaml` and a 3-layer variant. Teacher all-MiniLM-L6-v2; held-out
WordNet noun glosses; distillation: {tr["epochs"]} epochs over {tr["transfer"]:,} unlabelled glosses,
1 - cosine plus RKD on the sentence embeddings; one run each. Few-label accuracies (%) are means
over 5 draws of the labels and cover the {t2["classes"]} noun classes with at least 50 glosses in the
training pool; speed at batch 32.

{_text_rows(tr, False)}

The distilled 2-layer student encodes **{d2["speedup"]:.2f}x** as many sentences a second as the
teacher, reaches **{d2["logreg@10"] / t2["logreg@10"] * 100:.1f}%** of its logistic-regression accuracy at
10 labels a class ({d2["logreg@10"] * 100:.1f}% against {t2["logreg@10"] * 100:.1f}%) and has a mean cosine of
**{d2["mean_cosine"]:.3f}** to the teacher on held-out glosses; taken from the teacher without
distillation, the same sub-network has a cosine of
{tr["rows"]["2 layers, taken from the teacher"]["mean_cosine"]:.3f}. The 3-layer student reaches
{d3["mean_cosine"]:.3f} and {d3["logreg@10"] / t2["logreg@10"] * 100:.1f}% of the teacher's logreg@10. The exported
2-layer student reloads as a sentence-transformers folder with max |diff|
{tr["exports"]["sentence_transformers_max_abs_diff"]:.1e} and as ONNX with {tr["exports"]["onnx_max_abs_diff"]:.1e}.

## Static embeddings

`python bench/text.py --part static` (about 1 h): kdistill's static students
(`recipes/text/minilm_to_static.yaml` at three widths) against model2vec's `distill` plus
tokenlearn's training of the same widths on the same {st["transfer"]:,} glosses (in a virtual
environment the bench builds, `bench/.model2vec-venv`), every row judged by the same evaluation
code on the same held-out glosses and few-label draws; speed includes tokenisation; one run each.

{_text_rows(st, True)}

- **Accuracy**: distilled, the static students keep **{sr("static 256, distilled"):.1f}%** (width 256)
  and **{sr("static 384, distilled"):.1f}%** (384) of the teacher's logistic-regression accuracy at 10
  labels; as built, {sr("static 256, as built"):.0f}% and {sr("static 384, as built"):.0f}%. model2vec's
  students of the same widths {m2v(256)} at 256 and {m2v(384)} at 384{"; by nearest class centre (centre@10) and by neighbour overlap with the teacher, kdistill leads at every width" if lead else ""}.
- **Width 64**: model2vec's is more accurate by logistic regression
  ({srow["model2vec 64 (distill + tokenlearn)"]["logreg@10"] * 100:.1f}% against {srow["static 64, distilled"]["logreg@10"] * 100:.1f}%). Its
  tokenlearn run adds words of the corpus to the vocabulary and fits
  its vectors to the teacher's mean token embeddings by a trained linear map; kdistill keeps the
  teacher's vocabulary.
- **Speed: {min(speeds):.0f}-{max(speeds):.0f}x the teacher.** The teacher's WordPiece tokenizer alone bounds how fast any encoder that tokenises
  with it can go, and the static encoders spend roughly half their time in it
  (`python bench/static_ceiling.py`). Differences between rows of one kind of model are within
  the timing noise.

## Causal language model

`make bench-lm` (`bench/lm.py`) distils a Llama-style teacher trained on WordNet's glosses
(`make lm-teacher`, `bench/lm_teacher.py`: {lm1["teacher"]["epochs"]} epochs, held-out perplexity
{teacher_ppl:.2f}; no pretrained causal LM is installed offline) into 2-layer cuts of itself,
keeping its layers {lm3s["results"]["ce"][0]["student_kept_layers"]}. Recipe: `recipes/lm/wordnet_llama_to_2layer.yaml`. Each budget below was fixed before its rows
ran and is the same for every student row of its table, the cross-entropy-only row included.
"Gap closed" is the share of the gap between the cross-entropy-only student's perplexity and the
teacher's that a distilled student closes. The width-pruned rows keep 3 of 6 query heads (one
whole key/value group) and 512 of 1,024 MLP units.

![Perplexity gap to the teacher against speed](benchmarks/img/lm_gap_vs_speed.png)

### Budget 1: a large transfer set

{lm1["budget"]["blocks"]:,} blocks of 128 tokens ({pct(lm1["budget"]["blocks"] / lm1["teacher"]["train"]["train"])} of the teacher's training
text), {lm1["budget"]["epochs"]} epoch, batch {lm1["budget"]["batch"]},
AdamW lr {_lr(lm1["budget"]["lr"])}, seed 0 (`python bench/lm.py`; `bench/results/lm.md`).

{_lm_table(lm1)}

Forward KL closes **{pct(_closed(lm1, "forward_kl"))}** of the gap ({_ppl(lm1, "ce") - teacher_ppl:.1f}
perplexity, {pct((_ppl(lm1, "ce") - teacher_ppl) / teacher_ppl)} of the teacher's), at {_sp(lm1, "forward_kl"):.2f}x the
teacher's tokens a second at batch 16; with the hidden-state terms
{pct(_closed(lm1, "forward_kl+hidden"))}; JSD(0.5) {pct(_closed(lm1, "jsd"))}, the half-and-half mix
{pct(_closed(lm1, "forward_kl+ce"))}, reverse KL {pct(_closed(lm1, "reverse_kl"))}; the width-pruned cut
closes {pct(_closed(lm1, "forward_kl, width-pruned", "ce, width-pruned"))} of its own gap. Over
{len(lm1s["results"]["ce"])} seeds (`bench/results/lm-seeds.md`): cross-entropy only
{_mean_sd([r["test"]["student"]["perplexity"] for r in lm1s["results"]["ce"]])}, forward KL
{_mean_sd([r["test"]["student"]["perplexity"] for r in lm1s["results"]["forward_kl"]])}.

### What the share depends on

Cross-entropy and forward KL alone, seed 0, on other budgets (`python bench/lm.py --blocks B
--epochs E [--lr L] --rows ce forward_kl`; each writes `bench/results/lm-n{{B}}e{{E}}[-lr{{L}}].md`):

"""]
    budget_rows = []
    for name in ["lm.json", "lm-n6000e3.json", "lm-n1500e1.json", "lm-n1500e1-lr0.003.json", "lm-n1500e3.json"]:
        lm = _lm(res / name)
        b = lm["budget"]
        budget_rows.append([f"{b['blocks']:,}", b["epochs"], _lr(b['lr']), f"{_ppl(lm, 'ce'):.2f}",
                            f"{_ppl(lm, 'forward_kl'):.2f}",
                            pct((_ppl(lm, 'ce') - teacher_ppl) / teacher_ppl), pct(_closed(lm, "forward_kl"))])
    parts.append(_table(["transfer blocks", "epochs", "lr", "cross-entropy only", "forward KL",
                         "gap, share of the teacher's perplexity", "gap closed"], budget_rows, ["---:"] * 7))
    s2 = lm2s["results"]
    parts.append(f"""

On a large transfer set more steps help both students alike. On a small one, over several
epochs, the cross-entropy student nearly stops improving, and the distilled student keeps
learning from the teacher's whole distributions. That is the case distillation is for: a teacher
that has seen far more text than the student's corpus holds.

### Budget 2: a small transfer set

{lm2["budget"]["blocks"]:,} blocks ({pct(lm2["budget"]["blocks"] / lm2["teacher"]["train"]["train"])} of the teacher's training text),
{lm2["budget"]["epochs"]} epochs, batch {lm2["budget"]["batch"]}, AdamW lr
{_lr(lm2["budget"]["lr"])}, seed 0 (`python bench/lm.py --blocks 1500 --epochs 3`; `bench/results/lm-n1500e3.md`).

{_lm_table(lm2)}

The gap is {_ppl(lm2, "ce") - teacher_ppl:.1f} ({pct((_ppl(lm2, "ce") - teacher_ppl) / teacher_ppl)} of the teacher's perplexity).
Forward KL with the hidden-state terms closes **{pct(_closed(lm2, "forward_kl+hidden"))}** of it at
{_sp(lm2, "forward_kl+hidden"):.2f}x the teacher's speed at batch 16;
forward KL alone {pct(_closed(lm2, "forward_kl"))}, JSD(0.5) {pct(_closed(lm2, "jsd"))}, reverse KL
{pct(_closed(lm2, "reverse_kl"))}, the half-and-half mix {pct(_closed(lm2, "forward_kl+ce"))}; the width-pruned cut
closes {pct(_closed(lm2, "forward_kl, width-pruned", "ce, width-pruned"))} of its own gap. Over
{len(s2["ce"])} seeds (`bench/results/lm-n1500e3-seeds.md`): cross-entropy only
{_mean_sd([r["test"]["student"]["perplexity"] for r in s2["ce"]])}, forward KL
{_mean_sd([r["test"]["student"]["perplexity"] for r in s2["forward_kl"]])}
({pct(_closed(lm2s, "forward_kl"))}), forward KL + hidden states
{_mean_sd([r["test"]["student"]["perplexity"] for r in s2["forward_kl+hidden"]])} ({pct(_closed(lm2s, "forward_kl+hidden"))}).

### Budget 3: every row keeps its best epoch

{lm3s["budget"]["blocks"]:,} transfer blocks, {lm3s["budget"]["epochs"]} epochs, batch {lm3s["budget"]["batch"]}, AdamW lr
{_lr(lm3s["budget"]["lr"])}, and `keep_best` on {lm3s["budget"]["val"]} validation blocks drawn from the training blocks
apart from the transfer set: each row ends on the epoch whose validation perplexity is lowest, so
the longer schedule cannot hurt the cross-entropy student, and no epoch is chosen on the held-out
texts. {n_lm3} seeds (`python bench/lm.py --blocks 1500 --epochs 6 --val 64 --seeds 0 1 2 --rows ce
forward_kl+hidden`, `bench/results/lm-n1500e6-best64-seeds.md`).

{_lm_table(lm3s)}

The gap is {_ppl(lm3s, "ce") - teacher_ppl:.1f} ({pct((_ppl(lm3s, "ce") - teacher_ppl) / teacher_ppl)} of the teacher's perplexity).
Forward KL with the hidden-state terms closes **{pct(_closed(lm3s, "forward_kl+hidden"))}** of it
(per seed {", ".join(seed_closed)}) at **{_sp(lm3s, "forward_kl+hidden"):.2f}x** the teacher's tokens a second at
batch 16. Seed 0 of the other rows (`bench/results/lm-n1500e6-best64.md`):
forward KL alone {_ppl(lm3, "forward_kl"):.2f} ({pct(_closed(lm3, "forward_kl"))}), reverse KL
{_ppl(lm3, "reverse_kl"):.2f} ({pct(_closed(lm3, "reverse_kl"))}), JSD(0.5) {_ppl(lm3, "jsd"):.2f}
({pct(_closed(lm3, "jsd"))}).

Is the baseline handicapped by the 6-epoch schedule? Over 3 epochs with the same validation
blocks, each row keeping its best (`bench/results/lm-n1500e3-best64.md`): cross-entropy only
{_ppl(lm3b, "ce"):.2f}; against it the 6-epoch distilled students ({_ppl(lm3s, "forward_kl+hidden"):.2f})
still close {pct((_ppl(lm3b, "ce") - _ppl(lm3s, "forward_kl+hidden")) / (_ppl(lm3b, "ce") - teacher_ppl))} of the gap.
Most of distillation's lead comes from going on learning after the data alone is spent.

**In short**: with this teacher, distillation closes {pct(_closed(lm1, "forward_kl"))} of the gap on the
large transfer set, {pct(_closed(lm2, "forward_kl+hidden"))} on the small one over {lm2["budget"]["epochs"]} epochs and
{pct(_closed(lm3s, "forward_kl+hidden"))} when every row keeps its best epoch over {lm3s["budget"]["epochs"]}. The share grows
as the student's corpus shrinks against what the teacher learned from and as training goes on
past the point where the data alone has nothing more to teach. A pretrained teacher (trained on
billions of tokens) distilled on a user's corpus is far further along that line.

Peak memory of the token losses is measured by a test, not a bench, and has no results file:
`pytest -s tests/losses/test_token.py -k memory` prints it.

## Teacher caching

`make bench-speed` (`bench/speed.py`; `bench/results/speed.md`): the same student (the small
CNN), {sp_runs[0]["alone"]["images"]:,} images, batch 128, for (a) the student trained alone on labels,
the limit, (b) KD with the live teacher and (c) KD from the disk cache, for two teachers. Epoch
time: the fastest epoch over interleaved rounds, each in a fresh process; (b) and (c) as
multiples of (a), the cache build in epochs of (a). Peak memory of (c) includes building the
cache in the same process.

{sp_table}

A cached epoch costs about what an epoch of the student alone costs ({" and ".join(r[4] for r in sp_rows)}; one configuration's best
epoch varies from round to round, so read the ratios as estimates. For the larger teacher, 10
epochs from the cache, build included, run **{sp_rows[-1][6]}** faster than the textbook loop;
building the cache costs about {sp_runs[-1]["cached"]["build_s"] / sp_runs[-1]["live"]["epoch_s"]:.1f} epochs of that loop.

## Data bigger than memory

`make bench-data` (`bench/data.py`; `bench/results/data.md`) writes Fashion-MNIST out as (b) a
PNG folder, (c) a Hugging Face `save_to_disk` dataset and (d) `.npy` arrays, each again 10x
larger (600,000 training images by repetition), and runs the demo's distillation stage (KD +
hint, batch 128, from a disk cache of the teacher's outputs) on 5,000 transfer samples drawn
from the whole source, each configuration in a fresh process, 3 interleaved rounds. This bench
writes only markdown: the table is read from the tables of `bench/results/data.md`.

{da_table}

The ratio against (a) is the median of same-round ratios, counting only rounds in which both
runs lost at most 5% of CPU time to the hypervisor (`steal`). What gets there: the loader frees
the heap before the workers fork (`malloc_trim`); Pillow's EXIF pass runs only for images that
carry an orientation; and the workers run at a lower scheduling priority than the training
process (`data.loader.nice`, default 10), so decoding fills the CPU time the training step
leaves (`data.loader.nice=0` gives the old behaviour, to compare). Memory does not grow with
the data: 700k over 70k, {da_mem[0]} to {da_mem[1]} for every source and worker count. 224-px JPEGs
with random resized crop and flip decode at {da_jpeg[0]} to {da_jpeg[1]} images a second per worker.

## Crash and resume

`python bench/kill_anywhere.py --trials 40 --longer 3` kills a run of `recipes/resumable.yaml`
with SIGKILL at a moment drawn uniformly over the run, then finishes it as a user would:
{same} of {len(kills)} ended with the uninterrupted run's `student.safetensors` bytes and
`metrics.jsonl` (`bench/results/kill_anywhere.md`). See [crash and resume](workflows/resume.md).

""")
    phases = collections.Counter(k["phase"] for k in kills)
    ident = collections.Counter(k["phase"] for k in kills if k["identical"])
    parts.append(_table(["where the kill found the run", "trials", "identical after finishing"],
                        [[p, phases[p], ident[p]] for p in sorted(phases)]))
    parts.append("""

## On a GPU

`make gpu-check` (`bench/gpu_check.sh`) runs the CUDA smoke tests and times a distillation step
in each precision into `bench/results/gpu_check.md`; no figures have been recorded yet. See
[several processes, several GPUs](workflows/torchrun.md#on-a-gpu).
""")
    return "".join(parts), le_data, [("budget 1", lm1), ("budget 2", lm2), ("budget 3", lm3s)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md is stale")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (bench/results/ and docs/ under it)")
    args = ap.parse_args(argv)
    text, le, lms = render(args.root)
    page = args.root / PAGE
    if args.check:
        stale = not page.exists() or page.read_text() != text
        missing = [p for p in ("label_efficiency.png", "lm_gap_vs_speed.png") if not (args.root / IMG / p).exists()]
        if stale or missing:
            print(f"{PAGE} is stale" if stale else f"missing plots: {missing}", "- run python docs/bench_pages.py", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    plots(args.root / IMG, le, lms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
