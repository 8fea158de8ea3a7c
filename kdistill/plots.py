"""Figures of a run, drawn with matplotlib into PNG files (no display needed).

Each function takes plain data (metrics records, a summary dict, logits) and a path, and
returns the path it wrote, or None when the run holds nothing to draw.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROLES = {"teacher": "teacher", "baseline": "student without distillation", "student": "student (distilled)"}
COLOURS = {"teacher": "tab:blue", "baseline": "tab:gray", "student": "tab:orange"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(records: list[dict], path: Path) -> Path | None:
    """One panel a stage: every logged loss term by epoch and, on the right axis, the held-out accuracy."""
    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in records if r["stage"] == stage]
        epochs = [r["epoch"] for r in rows]
        for term in [k for k in rows[0]["train"] if k != "lr"]:
            ax.plot(epochs, [r["train"].get(term) for r in rows], marker=".", label=term)
        ax.set_title(f"{stage} ({rows[0]['model']})")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        evaluated = [(r["epoch"], v) for r in rows for split in ("val", "test") if split in r
                     for v in [r[split].get("accuracy", r[split].get("mean_cosine"))] if v is not None]
        if evaluated:
            right = ax.twinx()
            right.plot(*zip(*evaluated), color="black", linestyle="--", marker="o", label="held-out")
            right.set_ylabel("held-out accuracy / cosine")
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def tradeoff(summary: dict, path: Path) -> Path | None:
    """Accuracy against parameters and, when measured, against CPU latency: one point a model."""
    test = {role: m for role, m in summary.get("test", {}).items() if "accuracy" in m}
    if not test:
        return None
    latency = all("latency_ms_b1" in m for m in test.values())
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(9 if latency else 4.8, 3.6), squeeze=False)
    panels = [("params", "parameters")] + ([("latency_ms_b1", "CPU ms / sample, batch 1")] if latency else [])
    for ax, (key, label) in zip(axes[0], panels):
        for role, m in test.items():
            ax.scatter(m[key], 100 * m["accuracy"], s=60, color=COLOURS.get(role), label=ROLES.get(role, role))
            ax.annotate(f"{100 * m['accuracy']:.1f}%", (m[key], 100 * m["accuracy"]), fontsize=8,
                        xytext=(5, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def reliability(logits: dict[str, torch.Tensor], labels: torch.Tensor, path: Path, bins: int = 15) -> Path | None:
    """Accuracy against confidence in equal-width bins (the reliability diagram), a line a model."""
    if not logits:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":", label="calibrated")
    edges = torch.linspace(0, 1, bins + 1)
    for role, z in logits.items():
        conf, pred = z.float().softmax(-1).max(-1)
        which = torch.bucketize(conf, edges[1:-1])
        points = [(conf[which == b].mean().item(), (pred[which == b] == labels[which == b]).float().mean().item())
                  for b in range(bins) if (which == b).any()]
        ax.plot(*zip(*points), marker="o", color=COLOURS.get(role), label=ROLES.get(role, role))
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability on the test set")
    ax.legend(fontsize=8)
    return _save(fig, path)


def disagreement(teacher: torch.Tensor, student: torch.Tensor, path: Path, classes: list[str] | None = None) -> Path:
    """The teacher's predicted class against the student's: a confusion matrix of their predictions."""
    k = teacher.shape[1]
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_((teacher.argmax(1), student.argmax(1)), torch.ones(len(teacher), dtype=torch.long), accumulate=True)
    fig, ax = plt.subplots(figsize=(5.4, 4.8))
    image = ax.imshow(counts.float().log1p().numpy(), cmap="viridis")
    names = classes or [str(i) for i in range(k)]
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    agree = counts.diag().sum().item() / max(1, counts.sum().item())
    ax.set_title(f"teacher vs student predictions ({100 * agree:.1f}% agree)")
    ax.set_xlabel("student predicts")
    ax.set_ylabel("teacher predicts")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    return _save(fig, path)


def comparison(summaries: dict[str, dict], path: Path) -> Path | None:
    """Several runs: the test accuracy of each run's models, side by side."""
    runs = {name: s["test"] for name, s in summaries.items() if any("accuracy" in m for m in s.get("test", {}).values())}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(runs)), 3.8))
    width = 0.8 / len(ROLES)
    for j, role in enumerate(ROLES):
        xs = [i + j * width for i, t in enumerate(runs.values()) if role in t]
        ys = [100 * t[role]["accuracy"] for t in runs.values() if role in t]
        ax.bar(xs, ys, width, color=COLOURS[role], label=ROLES[role])
    ax.set_xticks([i + width for i in range(len(runs))], list(runs), rotation=20, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * m["accuracy"] for t in runs.values() for m in t.values() if "accuracy" in m)
    ax.set_ylim(max(0, low - 10), 100)
    ax.legend(fontsize=8)
    return _save(fig, path)
