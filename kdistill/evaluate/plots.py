"""Figures of a run, drawn with matplotlib into PNG files (no display needed).

Each function takes plain data (metrics records, a summary dict, logits) and a path, and
returns the path it wrote, or None when the run holds nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from kdistill.paths import naming, open_own  # noqa: E402

ROLES = {"teacher": "teacher", "baseline": "student without distillation", "student": "student (distilled)"}
LABELS = {**ROLES, "cut": "student as made (untrained)"}  # every model a run's figures may show
COLOURS = {"teacher": "tab:blue", "cut": "tab:olive", "baseline": "tab:gray", "student": "tab:orange"}
LEGEND_FONT = 8


def _figure(width: float, height: float, panels: int = 1):
    """A figure of ``panels`` axes in a row, laid out by matplotlib's constrained layout, which
    makes room for the tick labels, the colour bars and a legend placed outside the axes."""
    return plt.subplots(1, panels, figsize=(width, height), squeeze=False, layout="constrained")


def _save(fig, path: Path) -> Path:
    with naming(path), open_own(path, "wb") as f:  # never through a link
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path


def _legend_below(fig, handles: list, labels: list[str]) -> None:
    """One legend for the whole figure, below the axes, so that it covers no data: as many
    columns as fit the figure's width."""
    if not handles:
        return
    # an entry is about 0.4 in of handle and padding plus 0.055 in a character at 8 points
    entry = 0.4 + 0.055 * max(map(len, labels))
    columns = max(1, min(len(labels), int(0.95 * fig.get_figwidth() // entry)))
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=LEGEND_FONT, frameon=True)


def compact(value: float) -> str:
    """A tick label of a few characters: 20k, 1.5M, 0.2, 3."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def log_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """At most ``most`` round numbers (1, 2 or 5 times a power of ten) between ``low`` and
    ``high`` (both > 0), spread over the range in log scale; plain evenly spaced ticks when
    the range holds fewer than two such numbers."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    round_numbers = [m * 10.0 ** e for e in decades for m in (1, 2, 5) if low <= m * 10.0 ** e <= high]
    if len(round_numbers) < 2:
        return [t for t in matplotlib.ticker.MaxNLocator(nbins=3).tick_values(low, high) if low <= t <= high]
    if len(round_numbers) <= most:
        return round_numbers
    powers = [t for t in round_numbers if math.isclose(10 ** round(math.log10(t)), t)]
    chosen = powers if len(powers) >= 2 else round_numbers
    return chosen[:: math.ceil(len(chosen) / most)]


def _log_axis(ax, values: list[float], label: str) -> None:
    """A log-scale x axis over ``values`` with a few compact, rotated tick labels and room on
    the right for the points' annotations."""
    ax.set_xlabel(label)
    positive = [v for v in values if v > 0]
    if not positive:
        return
    ax.set_xscale("log")
    low, high = math.log10(min(positive)), math.log10(max(positive))
    span = max(high - low, 0.3)
    ax.set_xlim(10 ** (low - 0.12 * span), 10 ** (high + 0.3 * span))
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(log_ticks(*ax.get_xlim())))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: compact(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="x", labelrotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")


def learning_curves(records: list[dict], path: Path) -> Path | None:
    """One panel a stage: every logged loss term by epoch and, on the right axis, the held-out
    accuracy; one legend for all panels, below them, each loss term in the same colour everywhere."""
    kept = {r["stage"]: r["kept_epoch"] for r in records if "kept_epoch" in r}  # keep_best stages
    records = [r for r in records if "train" in r]
    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not stages:
        return None
    terms = list(dict.fromkeys(k for r in records for k in r["train"] if k != "lr"))
    colours = {term: f"C{i % 10}" for i, term in enumerate(terms)}
    fig, axes = _figure(4.2 * len(stages), 3.8, len(stages))
    legend, held_out = {}, None  # loss terms first, then the held-out curve
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in records if r["stage"] == stage]
        epochs = [r["epoch"] for r in rows]
        for term in [k for k in rows[0]["train"] if k != "lr"]:
            (line,) = ax.plot(epochs, [r["train"].get(term) for r in rows], marker=".", color=colours[term])
            legend.setdefault(term, line)
        ax.set_title(f"{stage} ({rows[0]['model']})" + (f", kept epoch {kept[stage]}" if stage in kept else ""))
        if stage in kept:
            ax.axvline(kept[stage], color="grey", linestyle=":")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        evaluated = [(r["epoch"], v) for r in rows for split in ("val", "test") if isinstance(r.get(split), dict)
                     for v in [r[split].get("accuracy", r[split].get("mean_cosine"))] if v is not None]
        if evaluated:
            right = ax.twinx()
            (line,) = right.plot(*zip(*evaluated), color="black", linestyle="--", marker="o")
            right.set_ylabel("held-out accuracy / cosine")
            held_out = line
    if held_out is not None:
        legend["held-out"] = held_out
    _legend_below(fig, list(legend.values()), list(legend))
    return _save(fig, path)


def tradeoff(summary: dict, path: Path) -> Path | None:
    """Accuracy against parameters and, when measured, against CPU latency: one point a model."""
    test = {role: m for role, m in summary.get("test", {}).items() if "accuracy" in m}
    if not test:
        return None
    latency = all("latency_ms_b1" in m for m in test.values())
    fig, axes = _figure(9 if latency else 4.8, 4.0, 2 if latency else 1)
    panels = [("params", "parameters")] + ([("latency_ms_b1", "CPU ms / sample, batch 1")] if latency else [])
    for ax, (key, label) in zip(axes[0], panels):
        for role, m in test.items():
            ax.scatter(m[key], 100 * m["accuracy"], s=60, color=COLOURS.get(role), label=LABELS.get(role, role))
            ax.annotate(f"{100 * m['accuracy']:.1f}%", (m[key], 100 * m["accuracy"]), fontsize=8,
                        xytext=(5, 4), textcoords="offset points")
        _log_axis(ax, [m[key] for m in test.values()], label)
        ax.margins(y=0.15)
        ax.set_ylabel("test accuracy (%)")
    _legend_below(fig, *axes[0][0].get_legend_handles_labels())
    return _save(fig, path)


def reliability(logits: dict[str, torch.Tensor], labels: torch.Tensor, path: Path, bins: int = 15) -> Path | None:
    """Accuracy against confidence in equal-width bins (the reliability diagram), a line a model."""
    if not logits:
        return None
    fig, axes = _figure(4.6, 4.8)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":", label="calibrated")
    edges = torch.linspace(0, 1, bins + 1)
    for role, z in logits.items():
        conf, pred = z.float().softmax(-1).max(-1)
        which = torch.bucketize(conf, edges[1:-1])
        points = [(conf[which == b].mean().item(), (pred[which == b] == labels[which == b]).float().mean().item())
                  for b in range(bins) if (which == b).any()]
        ax.plot(*zip(*points), marker="o", color=COLOURS.get(role), label=LABELS.get(role, role))
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability on the test set")
    _legend_below(fig, *ax.get_legend_handles_labels())
    return _save(fig, path)


def disagreement(teacher: torch.Tensor, student: torch.Tensor, path: Path, classes: list[str] | None = None) -> Path:
    """The teacher's predicted class against the student's: a confusion matrix of their predictions."""
    k = teacher.shape[1]
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_((teacher.argmax(1), student.argmax(1)), torch.ones(len(teacher), dtype=torch.long), accumulate=True)
    fig, axes = _figure(5.4, 4.8)
    ax = axes[0][0]
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
    fig, axes = _figure(max(4.5, 1.6 * len(runs)), 4.2)
    ax = axes[0][0]
    width = 0.8 / len(ROLES)
    for j, role in enumerate(ROLES):
        xs = [i + j * width for i, t in enumerate(runs.values()) if role in t]
        ys = [100 * t[role]["accuracy"] for t in runs.values() if role in t]
        ax.bar(xs, ys, width, color=COLOURS[role], label=ROLES[role])
    ax.set_xticks([i + width for i in range(len(runs))], list(runs), rotation=20, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * m["accuracy"] for t in runs.values() for m in t.values() if "accuracy" in m)
    ax.set_ylim(max(0, low - 10), 100)
    _legend_below(fig, *ax.get_legend_handles_labels())
    return _save(fig, path)
