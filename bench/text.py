"""A real pretrained teacher: all-MiniLM-L6-v2 against 2- and 3-layer sub-networks of itself,
taken from it as they are and after distillation on unlabelled WordNet noun glosses.

    python bench/text.py             # the table (about 30 min on 2 free CPU cores)
    python bench/text.py --quick     # a smoke run on a tiny random BERT in seconds

Every model is judged on the same 2,000 held-out glosses: mean cosine to the teacher,
overlap of the 10 nearest neighbours, few-label classification of the 26 noun classes by
nearest class centre and by logistic regression (labels drawn from the training pool; no
stage reads labels), encoding speed (sentences a second, batch 32, CPU, already tokenised;
all models timed in the same process) and size. The distilled 2-layer student is exported as
a sentence-transformers folder and as ONNX, both reloaded and checked against PyTorch.
Writes bench/results/text.md (and text.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_lines  # noqa: E402

from kdistill import run
from kdistill.evaluate.embedding import size_on_disk
from kdistill.export.onnx import export_onnx
from kdistill.recipe import load_recipe
from kdistill.pipeline import build_pipeline

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


def write_table(rows: dict, exports: dict, out: Path, seconds: float, epochs: int, transfer) -> str:
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
    lines += ["", f"Held-out WordNet noun glosses (2,000 test texts); distillation: {epochs} epochs over {transfer:,} "
              "unlabelled glosses, 1 - cosine plus RKD on the sentence embeddings. Accuracies (%) are means "
              "over 5 draws of the few labels. Speed: batch 32 on this machine's CPU (2 cores, shared with "
              "other jobs: compare the ratios, measured in the same process). "
              f"Exported 2-layer student: sentence-transformers folder reloads with max |diff| "
              f"{exports['sentence_transformers_max_abs_diff']:.1e}, ONNX with {exports['onnx_max_abs_diff']:.1e} "
              f"({exports['folder_bytes'] / 2**20:.1f} MB folder, {exports['onnx_bytes'] / 2**20:.1f} MB ONNX). "
              f"Wall time {seconds / 60:.0f} min."]
    return write_lines(lines, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random BERT: a smoke run")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the recipe's)")
    parser.add_argument("--transfer", type=int, default=None, help="unlabelled glosses (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tiny = tiny_teacher(args.results / "runs" / "tiny-bert") if args.quick else None
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
    stem = "text_quick" if args.quick else "text"
    (args.results / f"{stem}.json").write_text(json.dumps({"rows": rows, "exports": exports}, indent=2))
    recipe = load_recipe(recipe_for(2, args.quick, tiny, args.epochs, args.transfer))
    print(write_table(rows, exports, args.results / f"{stem}.md", time.perf_counter() - start,
                      recipe.stages[0].epochs, recipe.data.transfer))


if __name__ == "__main__":
    sys.exit(main())
