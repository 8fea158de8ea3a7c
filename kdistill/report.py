"""Tables from a run's summary: printed by the CLI and written to ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = {
    "teacher": "teacher",
    "baseline": "student without distillation",
    "student": "student (distilled)",
}


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.4f}" if kind == "float" else f"{value:.3f}"


CLASSIFIER_COLUMNS = [
    ("test accuracy", "accuracy", "pct"), ("agreement w/ teacher", "agreement", "pct"),
    ("KL to teacher", "kl_to_teacher", "float"), ("ECE", "ece", "float"),
    ("params", "params", "int"), ("CPU ms/sample b=1", "latency_ms_b1", "ms"),
    ("CPU ms/sample b=256", "latency_ms_b256", "ms"),
]
EMBEDDER_COLUMNS = [
    ("cosine to teacher", "mean_cosine", "float"), ("10-NN overlap", "neighbour_overlap@10", "pct"),
    ("centre @10 labels", "prototype@10", "pct"), ("logreg @10 labels", "logreg@10", "pct"),
    ("sentences/s b=32", "sentences_per_s", "int"), ("speed-up", "speedup", "float"),
    ("params", "params", "int"),
]


def comparison_table(summary: dict) -> str:
    """A markdown table of the test metrics of teacher, baseline and student (classifiers or
    sentence embedders)."""
    embedders = any("sentences_per_s" in m for m in summary["test"].values())
    columns = EMBEDDER_COLUMNS if embedders else CLASSIFIER_COLUMNS
    lines = ["| model | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for role, label in ROWS.items():
        metrics = summary["test"].get(role)
        if metrics is not None:
            cells = [_fmt(metrics.get(key), kind) for _, key, kind in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def embedding_table(summary: dict) -> str:
    """Few-label accuracy by distances in the embedding space, teacher (PCA) versus student."""
    emb = summary.get("embedding")
    if not emb:
        return ""
    keys = list(emb["teacher"])
    lines = ["| embedding space | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for role, label in (("teacher", "teacher (PCA)"), ("student", "student (adapted tap)")):
        lines.append(f"| {label} | " + " | ".join(_fmt(emb[role].get(k), "pct") for k in keys) + " |")
    head = emb["student"].get("prototype_head")
    note = f"\n\nThe student's prototype head, trained on the labelled set: {_fmt(head, 'pct')} test accuracy." if head is not None else ""
    return "\n".join(lines) + note + "\n\n`prototype@S` / `knn@S`: S labels a class, drawn from the labelled set.\n"


def write_report(run_dir: str | Path, summary: dict | None = None) -> Path:
    """Write ``report.md`` into a run directory (reads ``summary.json`` when not given)."""
    run_dir = Path(run_dir)
    if summary is None:
        summary = json.loads((run_dir / "summary.json").read_text())
    data = summary.get("data", {})
    stages = summary.get("stage_seconds", {})
    lines = [
        f"# Run `{summary.get('name', run_dir.name)}`",
        "",
        comparison_table(summary),
        "",
        embedding_table(summary),
        f"Data: {data.get('labelled', '?')} labelled, {data.get('transfer', '?')} unlabelled transfer, "
        f"{data.get('val', 0)} validation, {data.get('test', '?')} test samples. Device: {summary.get('device')}.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in stages.items()],
        f"| total (with data, setup, evaluation) | {summary.get('total_seconds', 0):.1f} |",
        "",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
