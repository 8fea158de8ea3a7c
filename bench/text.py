"""A real pretrained teacher: all-MiniLM-L6-v2 against 2- and 3-layer sub-networks of itself and
against static-embedding students, each as built from it and after distillation on unlabelled
WordNet noun glosses, beside model2vec's own static students of the same widths.

    python bench/text.py                    # both tables (about 1.5 h on 2 free CPU cores)
    python bench/text.py --part static      # the static table only (the other is kept)
    python bench/text.py --quick            # a smoke run on a tiny random BERT in a few minutes

Every model is judged on the same 2,000 held-out glosses: mean cosine to the teacher,
overlap of the 10 nearest neighbours, few-label classification of the 26 noun classes by
nearest class centre and by logistic regression (labels drawn from the training pool; no
stage reads labels), encoding speed (sentences a second, batch 32, CPU, already tokenised;
all models timed in the same process) and size. The distilled 2-layer student is exported as
a sentence-transformers folder and as ONNX, both reloaded and checked against PyTorch.

The static table (``--part static``): kdistill's ``model: static`` students of width 64, 256 and
384 (``recipes/text/minilm_to_static.yaml``, on the same transfer glosses as the transformer
rows), as built from the teacher and distilled; and model2vec's students of the same widths, built
by ``model2vec.distill`` and trained by ``tokenlearn`` on the same glosses
(``bench/model2vec_students.py``, in a virtual environment of their own, ``bench/.model2vec-venv``,
built on first use). All rows of this table are judged by the same evaluation code on the same
held-out glosses and the same few-label draws; speed here includes tokenisation (sentences a
second at batch 32, every model timed in this process in interleaved rounds).
Writes bench/results/text.md (and text.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import finished_summary, write_lines  # noqa: E402

from kdistill import run
from kdistill.evaluate.embedding import encoding_speed, evaluate_embedders, size_on_disk
from kdistill.export.onnx import export_onnx
from kdistill.recipe import load_recipe
from kdistill.data.tokenizer import resolve_path
from kdistill.pipeline import build_pipeline
from kdistill.rebuild import rebuild_run

HERE = Path(__file__).parent
ROOT = HERE.parent
RECIPE = ROOT / "recipes" / "text" / "minilm_to_2layer.yaml"
SHOTS = (1, 5, 10, 50)


def recipe_for(layers: int, quick: bool, tiny: Path | None, epochs: int | None, transfer: int | None = None,
               threads: int | None = None) -> dict:
    tree = load_recipe(RECIPE).model_dump(mode="json")
    tree["name"] = f"minilm-to-{layers}layer" + ("-quick" if quick else "")
    tree["student"] = {"from_teacher": {"layers": layers, "pick": "first_last"}}
    tree["threads"] = threads
    if epochs:
        tree["stages"][0]["epochs"] = epochs
    if transfer:
        tree["data"]["transfer"] = transfer
    if quick:  # a tiny random BERT and a CSV of made-up sentences
        tree["teacher"] = {"model": "hf", "args": {"path": str(tiny)}}
        tree["data"] = {"source": "csv", "path": str(tiny / "sentences.csv"), "labelled": 0, "val": 20,
                        "text": {"test": 60, "max_length": 16}}
        tree["stages"][0]["epochs"] = 1
    return tree


def undistilled(tree: dict) -> dict:
    """The final evaluation of the sub-network as cut from the teacher, before any training."""
    p = build_pipeline(load_recipe(tree), train=False)
    return p.family.final_metrics(p.recipe, p.models, p.splits, p.device)["test"]


def tiny_teacher(folder: Path) -> Path:
    """A 4-layer random BERT and 300 made-up sentences in 3 classes, for --quick."""
    sys.path.insert(0, str(ROOT / "tests"))  # the test fixtures live in tests/fixtures.py
    from fixtures import save_tiny_bert, write_tiny_sentences

    save_tiny_bert(folder, layers=4)
    write_tiny_sentences(folder / "sentences.csv", n=300)
    return folder


def check_exports(result, out: Path) -> dict:
    """Reload the exported folder with sentence-transformers and export ONNX; max differences."""
    from sentence_transformers import SentenceTransformer

    student = result.models["student"].cpu().eval()
    texts = ["a domestic animal that barks", "an implement used for cutting", "the period between sunrise and sunset"]
    folder = result.run_dir / "student_hf"
    st = SentenceTransformer(str(folder), device="cpu")
    st_diff = (torch.tensor(st.encode(texts)) - student.encode(texts)).abs().max().item()
    onnx = export_onnx(student, student.tokenize(texts), out / "student.onnx")
    return {"sentence_transformers_max_abs_diff": st_diff, "onnx_max_abs_diff": onnx["max_abs_diff"],
            "folder_bytes": size_on_disk(folder), "onnx_bytes": onnx["bytes"]}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def transformer_table(part: dict) -> list[str]:
    rows, exports = part["rows"], part["exports"]
    teacher = rows["teacher"]
    cols = ["params", "MB", "sentences/s", "speed-up", "cosine to teacher", "10-NN overlap"]
    cols += [f"centre@{s}" for s in SHOTS] + [f"logreg@{s}" for s in SHOTS] + ["logreg@10 / teacher's"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in rows.items():
        cells = [f"{m['params'] / 1e6:.1f}M", f"{m['weight_bytes'] / 2**20:.1f}", f"{m['sentences_per_s']:.0f}",
                 f"{m['speedup']:.2f}x", "1" if name == "teacher" else f"{m.get('mean_cosine', 0):.3f}",
                 "100" if name == "teacher" else pct(m.get("neighbour_overlap@10"))]
        cells += [pct(m.get(f"prototype@{s}")) for s in SHOTS] + [pct(m.get(f"logreg@{s}")) for s in SHOTS]
        cells.append(f"{m['logreg@10'] / teacher['logreg@10']:.3f}" if "logreg@10" in m else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Held-out WordNet noun glosses (2,000 test texts); distillation: {part['epochs']} epochs over "
              f"{part['transfer']:,} unlabelled glosses, 1 - cosine plus RKD on the sentence embeddings. Accuracies "
              "(%) are means over 5 draws of the few labels. Speed: batch 32, already tokenised, on this machine's "
              "CPU (2 cores, shared with other jobs: compare the ratios, measured in the same process). "
              f"Exported 2-layer student: sentence-transformers folder reloads with max |diff| "
              f"{exports['sentence_transformers_max_abs_diff']:.1e}, ONNX with {exports['onnx_max_abs_diff']:.1e} "
              f"({exports['folder_bytes'] / 2**20:.1f} MB folder, {exports['onnx_bytes'] / 2**20:.1f} MB ONNX). "
              f"Wall time {part['seconds'] / 60:.0f} min."]
    return lines


def transformer_part(args, tiny: Path | None) -> dict:
    """The transformer table's rows: the teacher, its 2- and 3-layer cuts as cut and distilled."""
    start = time.perf_counter()
    rows, results = {}, {}
    for layers in (2, 3):
        tree = recipe_for(layers, args.quick, tiny, args.epochs, args.transfer, args.threads)
        before = undistilled(tree)
        rows.setdefault("teacher", before["teacher"])
        rows[f"{layers} layers, taken from the teacher"] = before["student"]
        results[layers] = run(tree, runs_dir=args.results / "runs", overwrite=True, progress=False)
        print(f"{layers} layers: {json.dumps(results[layers].summary['test']['student'])}", flush=True)
    for layers in (2, 3):
        rows[f"{layers} layers, distilled"] = results[layers].summary["test"]["student"]
    exports = check_exports(results[2], args.results / "runs")
    recipe = load_recipe(recipe_for(2, args.quick, tiny, args.epochs, args.transfer))
    return {"rows": rows, "exports": exports, "seconds": time.perf_counter() - start,
            "epochs": recipe.stages[0].epochs, "transfer": recipe.data.transfer}


STATIC_RECIPE = ROOT / "recipes" / "text" / "minilm_to_static.yaml"
WIDTHS, QUICK_WIDTHS = (64, 256, 384), (8, 16, 32)  # the last: the teacher's own width (no PCA)
M2V_VENV = HERE / ".model2vec-venv"
THREADS = torch.get_num_threads()  # torch's choice, before --threads changes it
M2V_PACKAGES = ["torch==2.13.0", "model2vec[distill]==0.10.0", "tokenlearn==0.2.1", "scikit-learn"]


def static_recipe(width: int, quick: bool, tiny: Path | None, transfer: int | None, threads: int | None,
                  cache: Path) -> dict:
    """kdistill's static student of ``width``, on the transformer rows' data (their transfer count);
    the teacher's outputs in a disk cache under ``cache``, shared by the widths."""
    tree = load_recipe(STATIC_RECIPE).model_dump(mode="json")
    tree["name"] = f"minilm-to-static-{width}" + ("-quick" if quick else "")
    tree["student"]["args"]["width"] = width
    tree["threads"] = threads
    tree["data"]["transfer"] = transfer or load_recipe(RECIPE).data.transfer
    tree["stages"][0]["cache"] = {"dir": str(cache)}  # the teacher's pass, once for every width
    if quick:
        tree["teacher"] = {"model": "hf", "args": {"path": str(tiny)}}
        tree["data"] = {"source": "csv", "path": str(tiny / "sentences.csv"), "labelled": 0, "val": 20,
                        "text": {"test": 60, "max_length": 16}}
        tree["stages"][0]["epochs"] = 2
    return tree


def finished_or_run(tree: dict, runs: Path) -> dict:
    """The summary of the run of ``tree``: read back when a finished run of the same recipe is there
    (a rerun of the bench does not train it again), else run now."""
    return finished_summary(runs / tree["name"], tree) or run(tree, runs_dir=runs, overwrite=True,
                                                              progress=False).summary


def model2vec_python(given: Path | None) -> Path:
    """The Python of the environment model2vec's students are built in: ``given``, or
    bench/.model2vec-venv, made on first use."""
    if given:
        return given
    python = M2V_VENV / "bin" / "python"
    if not (M2V_VENV / ".installed").exists():
        import subprocess

        subprocess.run([sys.executable, "-m", "venv", str(M2V_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *M2V_PACKAGES], check=True)
        (M2V_VENV / ".installed").write_text(" ".join(M2V_PACKAGES))
    return python


def model2vec_students(python: Path, teacher: str, texts: list[str], widths, out: Path) -> dict:
    """width -> the folder of model2vec's student trained by tokenlearn on ``texts`` (under ``out``,
    in a folder named by the texts, so that other texts never reuse its features)."""
    import hashlib
    import os
    import subprocess

    out = out / hashlib.sha256("\n".join(texts).encode()).hexdigest()[:8]
    out.mkdir(parents=True, exist_ok=True)
    (out / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([str(python), str(HERE / "model2vec_students.py"), "--teacher", teacher, "--texts",
                    str(out / "texts.txt"), "--widths", *map(str, widths), "--out", str(out)], check=True, env=env)
    return {w: out / f"w{w}" for w in widths}


class TextEncoder(torch.nn.Module):
    """A model that encodes texts (model2vec's ``StaticModel``) as kdistill's evaluation calls
    models: on the teacher's token ids ``(B, 2, L)``, decoded back to text (uncased WordPiece: the
    text as the teacher read it, cut at the same length) and encoded by the model's own tokenizer.
    Its token table is a (frozen) parameter, so that size and parameter counts are its own."""

    def __init__(self, model, teacher_tokenizer):
        super().__init__()
        self.model, self.teacher_tokenizer = model, teacher_tokenizer
        self.table = torch.nn.Parameter(torch.as_tensor(model.embedding), requires_grad=False)

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.as_tensor(self.model.encode(list(texts), batch_size=len(texts) or 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = [row[mask.bool()].tolist() for row, mask in zip(x[:, 0], x[:, 1])]
        return self.encode(self.teacher_tokenizer.batch_decode(ids, skip_special_tokens=True))


def texts_of(inputs) -> list[str]:
    """The texts behind a split's ``Inputs`` (a view of a text source)."""
    texts = inputs.source.texts
    return list(texts) if inputs.index is None else [texts[i] for i in inputs.index.tolist()]


def wait_until_idle(minutes: float, threshold: float = 1.0) -> float:
    """Wait (at most ``minutes``) until the machine's 1-minute load average is below ``threshold``,
    so that timings are not taken beside another job; returns the load average when timing starts."""
    import os

    deadline = time.time() + 60 * minutes
    while os.getloadavg()[0] >= threshold and time.time() < deadline:
        time.sleep(30)
    return os.getloadavg()[0]


def interleaved_speeds(encoders: dict, texts: list[str], rounds: int = 3) -> dict:
    """name -> sentences a second of ``encode(texts)`` at batch 32, tokenisation included: the
    median of ``rounds`` rounds, each timing every model once in turn (so that a busy moment of a
    shared machine falls on all of them alike)."""
    times = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            times[name].append(encoding_speed(encode, texts, batch_size=32))
    return {name: statistics.median(v) for name, v in times.items()}


def static_part(args, tiny: Path | None) -> dict:
    """The static table's rows (teacher, kdistill's static students, model2vec's) and checks."""
    from model2vec import StaticModel

    widths = QUICK_WIDTHS if args.quick else WIDTHS
    cache = args.results / "runs" / "teacher-cache-text"
    trees = {w: static_recipe(w, args.quick, tiny, args.transfer, args.threads, cache) for w in widths}
    pipelines, summaries = {}, {}
    for w, tree in trees.items():
        summaries[w] = finished_or_run(tree, args.results / "runs")
        pipelines[w] = rebuild_run(args.results / "runs" / tree["name"])  # its models, and the splits
        print(f"static {w}: {json.dumps(summaries[w]['test']['student'])}", flush=True)
    rows = {"teacher": summaries[widths[0]]["test"]["teacher"]}
    for w in widths:
        rows[f"static {w}, as built"] = summaries[w]["test"]["cut"]
        rows[f"static {w}, distilled"] = summaries[w]["test"]["student"]
    first = pipelines[widths[0]]
    recipe, splits = first.recipe, first.splits
    teacher = first.models["teacher"].cpu().eval()
    transfer = texts_of(splits.transfer_set.x)
    teacher_folder = resolve_path(recipe.teacher.args["path"])  # the side environment knows no model ids
    folders = model2vec_students(model2vec_python(args.model2vec_python), teacher_folder, transfer, widths,
                                 args.results / "runs" / "model2vec")
    m2v = {f"model2vec {w} (distill + tokenlearn)": TextEncoder(StaticModel.from_pretrained(str(folders[w])),
                                                                teacher.tokenizer) for w in widths}
    judged = evaluate_embedders({"teacher": teacher, **m2v}, splits.pool_set.x, splits.pool_labels,
                                splits.test_set.x, splits.test_set.y, "cpu", SHOTS, recipe.seed)
    same = judged["teacher"]["logreg@10"] == rows["teacher"]["logreg@10"]
    rows.update({name: judged[name] for name in m2v})
    # speed, tokenisation included, every model in this process, with torch's own thread count
    torch.set_num_threads(THREADS)
    load = wait_until_idle(args.wait_idle)
    encoders = {"teacher": lambda b: teacher.encode(b, batch_size=32)}
    for w in widths:
        for role, label in (("cut", "as built"), ("student", "distilled")):
            model = pipelines[w].models[role].cpu().eval()
            encoders[f"static {w}, {label}"] = lambda b, m=model: m.encode(b, batch_size=32)
    encoders.update({name: m.encode for name, m in m2v.items()})
    speed = interleaved_speeds(encoders, texts_of(splits.test_set.x)[:1024])
    for name, value in speed.items():
        rows[name]["sentences_per_s"], rows[name]["speedup"] = value, value / speed["teacher"]
    # kdistill's exported static folder, read by model2vec itself
    exported = StaticModel.from_pretrained(str(args.results / "runs" / trees[widths[1]]["name"] / "student_static"))
    sample = texts_of(splits.test_set.x)[:256]
    ours = pipelines[widths[1]].models["student"].encode(sample)
    diff = (torch.as_tensor(exported.encode(sample)) - ours).abs().max().item()
    return {"rows": rows, "same_draws": same, "load_average": load, "export_width": widths[1],
            "model2vec_max_abs_diff": diff,
            "epochs": recipe.stages[0].epochs, "transfer": len(transfer),
            "model2vec": {w: json.loads((folders[w] / "bench.json").read_text()) for w in widths}}


def static_table(part: dict) -> list[str]:
    """The static table, with the done-when ratios to the teacher."""
    rows, teacher = part["rows"], part["rows"]["teacher"]
    cols = ["params", "MB", "sentences/s", "speed-up", "10-NN overlap", *[f"centre@{s}" for s in SHOTS],
            *[f"logreg@{s}" for s in SHOTS], "logreg@10 / teacher's"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in rows.items():
        cells = [f"{m['params'] / 1e6:.1f}M", f"{m['weight_bytes'] / 2**20:.1f}", f"{m['sentences_per_s']:.0f}",
                 f"{m['speedup']:.1f}x", "100" if name == "teacher" else pct(m.get("neighbour_overlap@10"))]
        cells += [pct(m.get(f"prototype@{s}")) for s in SHOTS] + [pct(m.get(f"logreg@{s}")) for s in SHOTS]
        cells.append(f"{m['logreg@10'] / teacher['logreg@10']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    minutes = ", ".join(f"{v['train_s'] / 60:.0f}" for v in part["model2vec"].values())
    warning = "" if part["same_draws"] else " (WARNING: the teacher scored differently in the two evaluations)"
    lines += ["", "Static students: kdistill's `model: static` (`recipes/text/minilm_to_static.yaml`: "
              f"{part['epochs']} epochs over {part['transfer']:,} unlabelled glosses, 1 - cosine to the teacher "
              "projected by the student's PCA) and model2vec 0.10's `distill` then `tokenlearn` 0.2.1's training "
              "on the same glosses "
              f"(tokenlearn's own defaults; training took {minutes} "
              "min by width). Same held-out glosses and few-label draws for every row"
              f"{warning}. "
              "Speed: batch 32, tokenisation included, median of 3 interleaved rounds in one process on this "
              f"machine's CPU (2 cores; 1-minute load average {part['load_average']:.2f} when timing began). "
              f"kdistill's exported `student_static/` (width {part['export_width']}) read by "
              f"model2vec's `StaticModel`: max |diff| {part['model2vec_max_abs_diff']:.1e}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random BERT: a smoke run")
    parser.add_argument("--part", choices=["all", "transformer", "static"], default="all",
                        help="the tables to measure (the other is kept from text.json)")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the recipe's)")
    parser.add_argument("--transfer", type=int, default=None, help="unlabelled glosses (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--model2vec-python", type=Path, default=None,
                        help="a Python with model2vec[distill] and tokenlearn (default: bench/.model2vec-venv)")
    parser.add_argument("--wait-idle", type=float, default=0.0,
                        help="minutes the static table's timing may wait for the machine to fall idle")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    tiny = tiny_teacher(args.results / "runs" / "tiny-bert") if args.quick else None
    stem = "text_quick" if args.quick else "text"
    saved = args.results / f"{stem}.json"
    parts = json.loads(saved.read_text()) if saved.exists() else {}
    if args.part in ("all", "transformer"):
        parts["transformer"] = transformer_part(args, tiny)
        saved.write_text(json.dumps(parts, indent=2))
    if args.part in ("all", "static"):
        parts["static"] = static_part(args, tiny)
        saved.write_text(json.dumps(parts, indent=2))
    lines = []
    if "transformer" in parts:
        lines += ["## Sub-networks of the teacher", "", *transformer_table(parts["transformer"]), ""]
    if "static" in parts:
        lines += ["## Static-embedding students, and model2vec's", "", *static_table(parts["static"]), ""]
    print(write_lines(lines, args.results / f"{stem}.md"))


if __name__ == "__main__":
    sys.exit(main())
