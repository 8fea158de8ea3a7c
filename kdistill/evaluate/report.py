"""Tables from a run's summary: printed by the CLI and written to ``report.md``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from kdistill.errors import KDistillError, shown
from kdistill.paths import no_links, write_own

ROWS = {
    "teacher": "teacher",
    "cut": "student as made from the teacher (untrained)",
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
    ("centre @10 labels", "prototype@10", "pct"), ("centre @10 balanced", "prototype_balanced@10", "pct"),
    ("logreg @10 labels", "logreg@10", "pct"), ("logreg @10 balanced", "logreg_balanced@10", "pct"),
    ("majority class", "majority_rate", "pct"),
    ("sentences/s b=32", "sentences_per_s", "int"), ("speed-up", "speedup", "float"),
    ("params", "params", "int"),
]


LANGUAGE_MODEL_COLUMNS = [
    ("perplexity", "perplexity", "float"), ("agreement w/ teacher", "agreement", "pct"),
    ("token KL to teacher", "kl_to_teacher", "float"), ("tokens/s b=1", "tokens_per_s_b1", "int"),
    ("tokens/s b=16", "tokens_per_s_b16", "int"), ("speed-up b=16", "speedup_b16", "float"),
    ("params", "params", "int"),
]


def comparison_table(summary: dict) -> str:
    """A markdown table of the test metrics of teacher, baseline and student (classifiers,
    sentence embedders or language models)."""
    found = lambda key: any(key in m for m in summary["test"].values())  # noqa: E731
    columns = (EMBEDDER_COLUMNS if found("sentences_per_s") else LANGUAGE_MODEL_COLUMNS if found("perplexity")
               else CLASSIFIER_COLUMNS)
    lines = ["| model | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for role, label in ROWS.items():
        metrics = summary["test"].get(role)
        if metrics is not None:
            cells = [_fmt(metrics.get(key), kind) for _, key, kind in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def samples_section(summary: dict) -> str:
    """Greedy continuations of the same prompts by each model (language models)."""
    samples = summary.get("samples")
    if not samples:
        return ""
    lines = ["## Sample continuations (greedy)", ""]
    for role, items in samples.items():
        lines.append(f"**{ROWS.get(role, role)}**")
        lines += [f"- `{s['prompt']}` → `{s['continuation']}`".replace("\n", " ") for s in items]
        lines.append("")
    return "\n".join(lines)


def _balanced_key(key: str) -> str:
    """``prototype@10`` -> ``prototype_balanced@10``: where few-label results keep the balanced accuracy."""
    method, _, shots = key.partition("@")
    return f"{method}_balanced@{shots}"


def embedding_table(summary: dict) -> str:
    """Few-label accuracy (and balanced accuracy) by distances in the embedding space, teacher
    (PCA) versus student, with the majority-class rate of the test set."""
    emb = summary.get("embedding")
    if not emb:
        return ""
    keys = [k for k in emb["teacher"] if "_balanced@" not in k and k != "majority_rate"]
    balanced = any(_balanced_key(k) in emb["teacher"] for k in keys)
    cell = lambda m, k: _fmt(m.get(k), "pct") + (f" / {_fmt(m.get(_balanced_key(k)), 'pct')}" if balanced else "")  # noqa: E731
    lines = ["| embedding space | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for role, label in (("teacher", "teacher (PCA)"), ("student", "student (adapted tap)")):
        lines.append(f"| {label} | " + " | ".join(cell(emb[role], k) for k in keys) + " |")
    head = emb["student"].get("prototype_head")
    note = f"\n\nThe student's prototype head, trained on the labelled set: {_fmt(head, 'pct')} test accuracy." if head is not None else ""
    majority = emb["teacher"].get("majority_rate")
    if majority is not None:
        note += f"\n\nAlways predicting the test set's most common class: {_fmt(majority, 'pct')} accuracy."
    legend = "`prototype@S` / `knn@S`: S labels a class, drawn from the labelled set"
    legend += "; each cell: accuracy / balanced accuracy (the mean recall of the classes).\n" if balanced else ".\n"
    return "\n".join(lines) + note + "\n\n" + legend


PLOTS = "plots"
RERUN = "re-run the recipe (kdistill run) to write the run directory again"


def read_summary(run_dir: Path) -> dict:
    """``run_dir/summary.json``, checked to be a finished run's summary (a one-line error if not)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise KDistillError(f"report: {run_dir} is not a finished run directory (no summary.json).")
    try:
        summary = json.loads(path.read_text(encoding="utf8"))
    except UnicodeDecodeError:
        raise KDistillError(f"report: {path} is not JSON text; {RERUN}.") from None
    except json.JSONDecodeError as err:
        raise KDistillError(f"report: {path} is not valid JSON ({err.msg} at line {err.lineno}); {RERUN}.") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("test"), dict) or \
            not all(isinstance(m, dict) for m in summary["test"].values()):
        raise KDistillError(f"report: {path} holds no 'test' metrics of each model; {RERUN}.")
    for key in ("data", "stage_seconds", "embedding"):
        if not isinstance(summary.get(key, {}), dict):
            raise KDistillError(f"report: {path}: '{key}' is not a mapping; {RERUN}.")
    numeric = {key for _, key, _ in CLASSIFIER_COLUMNS + EMBEDDER_COLUMNS}
    for role, metrics in summary["test"].items():
        bad = next((k for k in numeric & metrics.keys() if not _is_number(metrics[k])), None)
        if bad is not None:
            raise KDistillError(f"report: {path}: test.{role}.{bad} is {shown(metrics[bad])}, not a number; {RERUN}.")
    if not all(_is_number(v) for v in summary.get("stage_seconds", {}).values()):
        raise KDistillError(f"report: {path}: stage_seconds holds a value that is not a number; {RERUN}.")
    return summary


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


COMPARISON = ("report.md", "report.html", "comparison.png")  # what the comparison of several runs writes


def check_report_inputs(run_dirs: list[str | Path], out: str | Path | None, overwrite: bool = False) -> list[dict]:
    """Every run directory's summary, and the folders the report writes, checked before anything
    is written (so one bad directory leaves the others' reports as they were): each a kdistill
    run, no link where the report writes, and (without ``overwrite``) no comparison in ``out``."""
    from kdistill.paths import user_path

    summaries = []
    for run_dir in run_dirs:
        run_dir = user_path(run_dir, "report")
        summaries.append(read_summary(run_dir))
        check_run_written(run_dir)
        written = ["report.md", "report.html", *(f"{PLOTS}/{p.name}" for p in (run_dir / PLOTS).glob("*.png"))]
        expected = {"metrics.jsonl": "file", "predictions.safetensors": "file", PLOTS: "folder",
                    **{name: "file" for name in written}}
        for name, kind in expected.items():
            path = no_links(run_dir / name, run_dir) if name in written or name == PLOTS else run_dir / name
            if path.exists() and (path.is_dir() if kind == "file" else not path.is_dir()):
                raise KDistillError(f"report: {path} should be a {kind}; move it away and run the report again.")
        read_metrics(run_dir / "metrics.jsonl")
        if (run_dir / "predictions.safetensors").exists():
            read_predictions(run_dir / "predictions.safetensors")
    if out is not None:
        out = user_path(out, "report --out")
        if out.exists() and not out.is_dir():
            raise KDistillError(f"report --out: {out} is a file; give a folder for the comparison of the runs.")
        check_comparison_out(out, overwrite)
    return summaries


def check_run_written(run_dir: Path) -> None:
    """``run_dir`` is a run directory kdistill wrote, so the report may write into it."""
    from kdistill.rundir import check_written

    check_written(run_dir, "report")


def check_comparison_out(out: Path, overwrite: bool) -> None:
    """The comparison's files in ``out``: none a folder or a link, none there already unless ``overwrite``."""
    for path in (out / name for name in COMPARISON):
        if path.is_dir() and not path.is_symlink():
            raise KDistillError(f"report --out: {path} is a folder where the comparison writes a file; move it away.")
        no_links(path)
        if path.exists() and not overwrite:
            raise KDistillError(f"report --out: {path} exists; choose another --out, or pass --overwrite to replace "
                                "the comparison there.")


def read_metrics(path: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (none when the file is missing), a one-line error naming
    the line at fault when one is neither a record of an epoch nor a ``keep_best`` stage's kept
    epoch (stage, model, kept_epoch)."""
    if not path.exists():
        return []
    fix = "delete that line, or the file to draw the report without learning curves"
    try:
        lines = path.read_text(encoding="utf8").splitlines()
    except UnicodeDecodeError:
        raise KDistillError(f"report: {path} is not JSON lines text; delete it to draw the report without "
                            "learning curves.") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise KDistillError(f"report: {path} line {n} is not valid JSON ({err.msg}); {fix}.") from None
        kept = isinstance(record, dict) and {"stage", "model", "kept_epoch"} <= record.keys()
        if not kept and (not isinstance(record, dict) or not {"stage", "model", "epoch"} <= record.keys() or
                         not isinstance(record.get("train"), dict)):
            raise KDistillError(f"report: {path} line {n} is not an epoch's record (stage, model, epoch, train); "
                                f"{fix}.")
        records.append(record)
    return records


def read_predictions(path: Path) -> dict:
    """``predictions.safetensors``: the test ``labels (N,)`` and each model's logits ``(N, classes)``,
    a one-line error naming the file when it is unreadable or holds something else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = f"delete it to draw the report without the calibration and disagreement figures, or {RERUN}"
    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise KDistillError(f"report: {path} cannot be read ({_first_line(err)}); {fix}.") from None
    labels = saved.pop("labels", None)
    if labels is None or labels.dim() != 1 or labels.is_floating_point() or \
            not all(z.dim() == 2 and len(z) == len(labels) and z.shape[1] > 0 for z in saved.values()):
        raise KDistillError(f"report: {path} does not hold the test labels and each model's (N, classes) logits; "
                            f"{fix}.")
    return {"labels": labels, **saved}


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def run_plots(run_dir: Path, summary: dict) -> list[tuple[str, Path]]:
    """Draw a run's figures into ``run_dir/plots``: (caption, path) of each drawn."""
    from kdistill.evaluate import plots

    folder = no_links(run_dir / PLOTS, run_dir)
    folder.mkdir(exist_ok=True)
    records = read_metrics(run_dir / "metrics.jsonl")
    drawn = [("Learning curves: every loss term by epoch, held-out accuracy dashed",
              plots.learning_curves(records, folder / "learning_curves.png")),
             ("Test accuracy against size and latency", plots.tradeoff(summary, folder / "tradeoff.png"))]
    predictions = run_dir / "predictions.safetensors"
    if predictions.exists():
        saved = read_predictions(predictions)
        labels = saved.pop("labels")
        drawn.append(("Reliability (calibration) on the test set", plots.reliability(saved, labels, folder / "reliability.png")))
        if "teacher" in saved and "student" in saved:
            classes = summary.get("classes")
            k = saved["teacher"].shape[1]
            classes = classes if isinstance(classes, list) and len(classes) == k else None
            drawn.append(("Where teacher and student disagree",
                          plots.disagreement(saved["teacher"], saved["student"], folder / "disagreement.png", classes)))
    return [(caption, path) for caption, path in drawn if path is not None]


def _html_table(markdown: str) -> str:
    rows = [line.strip().strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    rows = [r for r in rows if not all(set(c.strip()) <= set("-:") for c in r)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_page(title: str, parts: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")


def _figure_html(caption: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<h3>{html.escape(caption)}</h3><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"


def write_report(run_dir: str | Path, summary: dict | None = None, figures: bool = True) -> Path:
    """Write ``report.md`` (with the figures as PNGs in ``plots/``) and a self-contained
    ``report.html`` into a run directory (reads ``summary.json`` when not given)."""
    run_dir = Path(run_dir)
    if summary is None:
        summary = read_summary(run_dir)
        check_run_written(run_dir)
    data = summary.get("data", {})
    stages = summary.get("stage_seconds", {})
    table = comparison_table(summary)
    details = [
        f"Data: {data.get('labelled', '?')} labelled, {data.get('transfer', '?')} unlabelled transfer, "
        f"{data.get('val', 0)} validation, {data.get('test', '?')} test samples. Device: {summary.get('device')}."
        + (f" The student keeps the teacher's layers {summary['student_kept_layers']}."
           if "student_kept_layers" in summary else ""),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in stages.items()],
        f"| total (with data, setup, evaluation) | {summary.get('total_seconds', 0):.1f} |",
    ]
    drawn = run_plots(run_dir, summary) if figures else []
    title = f"Run `{summary.get('name', run_dir.name)}`"
    lines = [f"# {title}", "", table, "", embedding_table(summary), samples_section(summary), *details, "",
             *[f"![{caption}]({PLOTS}/{path.name})" for caption, path in drawn], ""]
    path = write_own(run_dir / "report.md", "\n".join(lines), run_dir)
    parts = [_html_table(table), _html_table(embedding_table(summary)), f"<p>{html.escape(details[0])}</p>",
             _html_table("\n".join(details[2:])), *[_figure_html(c, p) for c, p in drawn]]
    write_own(run_dir / "report.html", _html_page(title.replace("`", ""), parts), run_dir)
    return path


def compare_runs(run_dirs: list[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """One table and one chart over several finished runs, in ``out/report.md`` and
    ``out/report.html`` (``overwrite``: replace a comparison already there)."""
    from kdistill.evaluate import plots

    out = Path(out)
    summaries = {}
    for d in map(Path, run_dirs):
        name = d.name if d.name not in summaries else f"{d.name} ({len(summaries) + 1})"
        summaries[name] = read_summary(d)
    check_comparison_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    header = "| run | model | " + " | ".join(c[0] for c in CLASSIFIER_COLUMNS[:5]) + " |"
    lines = [header, "|---|---|" + "---:|" * 5]
    for name, s in summaries.items():
        for role, label in ROWS.items():
            m = s["test"].get(role)
            if m is not None:
                lines.append(f"| {name} | {label} | " + " | ".join(_fmt(m.get(k), kind) for _, k, kind in CLASSIFIER_COLUMNS[:5]) + " |")
    table = "\n".join(lines)
    chart = plots.comparison(summaries, out / "comparison.png")
    markdown = f"# {len(summaries)} runs\n\n{table}\n\n" + ("![test accuracy](comparison.png)\n" if chart else "")
    write_own(out / "report.md", markdown)
    figures = [_figure_html("Test accuracy of each run", chart)] if chart else []
    write_own(out / "report.html", _html_page(f"{len(summaries)} runs", [_html_table(table), *figures]))
    return out / "report.md"
