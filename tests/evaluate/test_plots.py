"""The figures' layout, measured with matplotlib's renderer: tick labels that do not overlap and
legends that cover no data, on realistic runs (models of very different sizes and speeds)."""

import itertools

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox

from kdistill.evaluate import plots


def _model(accuracy, params, latency):
    return {"accuracy": accuracy, "params": params, "latency_ms_b1": latency, "latency_ms_b256": latency / 20}


SUMMARIES = {  # test metrics of teacher, student without distillation, distilled student
    "resnet teacher, cnn students": (_model(0.935, 11_200_000, 3.1), _model(0.884, 98_000, 0.21),
                                     _model(0.913, 98_000, 0.23)),
    "bert teacher, smaller transformers": (_model(0.93, 109_000_000, 14.0), _model(0.80, 4_400_000, 1.3),
                                           _model(0.91, 14_500_000, 3.6)),
    "cnn teacher, tiny students": (_model(0.912, 1_250_000, 2.4), _model(0.845, 23_000, 0.09),
                                   _model(0.887, 23_000, 0.11)),
    "within a decade": (_model(0.91, 420_000, 0.42), _model(0.85, 110_000, 0.071), _model(0.89, 110_000, 0.069)),
}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots module saves, kept to be measured after it closed them."""
    kept = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (kept.append(fig), save(fig, path))[1])
    return kept


def _render(fig):
    """Draw ``fig`` as it is saved (110 dpi); its renderer, to measure the drawn artists with."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(110)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b, slack: float = 0.5) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > slack and min(a.y1, b.y1) - max(a.y0, b.y0) > slack


def _x_tick_labels(ax, renderer) -> list:
    """Window extents of the x tick labels drawn (visible, not empty, inside the view)."""
    low, high = sorted(ax.get_xlim())
    return [t.label1.get_window_extent(renderer) for t in ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
            if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high]


def _data_points(ax) -> np.ndarray:
    """Every plotted point of ``ax`` (line vertices and scatter points) in display coordinates,
    those inside the axes (the others are clipped, not drawn)."""
    points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]
    points = np.concatenate(points) if points else np.empty((0, 2))
    return np.array([p for p in points if np.isfinite(p).all() and ax.bbox.contains(*p)]).reshape(-1, 2)


def _bars(ax, renderer) -> list:
    """Window extents of the bars of ``ax``, clipped to the axes as drawn."""
    boxes = [Bbox.intersection(p.get_window_extent(renderer), ax.bbox) for p in ax.patches]
    return [b for b in boxes if b is not None]


def _check_layout(fig) -> None:
    renderer = _render(fig)
    page = fig.bbox
    for ax in fig.axes:
        labels = _x_tick_labels(ax, renderer)
        clashes = [(a, b) for a, b in itertools.combinations(labels, 2) if _overlap(a, b)]
        assert not clashes, f"x tick labels overlap: {clashes}"
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, "legend cut off"
        for ax in fig.axes:
            covered = [tuple(p) for p in _data_points(ax) if box.contains(*p)]
            assert not covered, f"the legend {box} covers data points {covered}"
            assert not any(_overlap(box, b) for b in _bars(ax, renderer)), "the legend covers a bar"
            texts = [t.get_window_extent(renderer) for t in ax.texts]
            assert not any(_overlap(box, t) for t in texts), "the legend covers a point's label"


@pytest.mark.parametrize("name", SUMMARIES)
def test_tradeoff_ticks_do_not_overlap_and_the_legend_covers_no_point(figures, tmp_path, name):
    teacher, baseline, student = SUMMARIES[name]
    summary = {"test": {"teacher": teacher, "baseline": baseline, "student": student}}
    assert plots.tradeoff(summary, tmp_path / "tradeoff.png").is_file()
    (fig,) = figures
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    _check_layout(fig)
    # a few ticks a panel, each labelled compactly
    for ax in fig.axes:
        assert 2 <= len(_x_tick_labels(ax, _render(fig))) <= 5
        assert all(len(t.get_text()) <= 5 for t in ax.get_xticklabels() if t.get_text())


def test_tradeoff_without_latency_has_one_panel(figures, tmp_path):
    summary = {"test": {role: {"accuracy": m["accuracy"], "params": m["params"]}
                        for role, m in zip(plots.ROLES, SUMMARIES["resnet teacher, cnn students"])}}
    plots.tradeoff(summary, tmp_path / "tradeoff.png")
    (fig,) = figures
    assert len(fig.axes) == 1
    _check_layout(fig)


def _records():
    """metrics.jsonl of a run: teacher, baseline and a distillation stage with three loss terms, the
    held-out accuracy climbing to the top right of each panel."""
    records = []
    for stage, model, terms in (("teacher", "teacher", ["loss"]), ("baseline", "baseline", ["loss"]),
                                ("distil", "student", ["loss", "kd", "ce", "hint"])):
        for epoch in range(1, 9):
            train = {term: (1.0 + i) * 2.0 / epoch + 0.1 * i for i, term in enumerate(terms)} | {"lr": 0.01}
            records.append({"stage": stage, "model": model, "epoch": epoch, "train": train,
                            "val": {"accuracy": 0.6 + 0.04 * epoch, "ece": 0.05}})
    return records


def test_learning_curves_legend_covers_no_curve(figures, tmp_path):
    assert plots.learning_curves(_records(), tmp_path / "curves.png").is_file()
    (fig,) = figures
    _check_layout(fig)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["loss", "kd", "ce", "hint", "held-out"]


def test_reliability_legend_covers_no_curve(figures, tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (600,), generator=g)
    logits = {role: torch.randn(600, 10, generator=g) * scale + 4 * torch.nn.functional.one_hot(labels, 10)
              for role, scale in (("teacher", 1.0), ("baseline", 2.5), ("student", 1.5))}
    plots.reliability(logits, labels, tmp_path / "reliability.png")
    (fig,) = figures
    _check_layout(fig)


def test_comparison_legend_covers_no_bar(figures, tmp_path):
    summaries = {f"run-{i}": {"test": {role: {"accuracy": a - 0.01 * i}
                                       for role, a in zip(plots.ROLES, (0.97, 0.93, 0.95))}} for i in range(3)}
    plots.comparison(summaries, tmp_path / "comparison.png")
    (fig,) = figures
    _check_layout(fig)


def test_compact_tick_labels_and_few_log_ticks():
    assert [plots.compact(v) for v in (23_000, 1_500_000, 2e9, 0.2, 3.0, 100.0)] == ["23k", "1.5M", "2G", "0.2", "3",
                                                                                      "100"]
    assert plots.log_ticks(15_000, 2_000_000) == [1e5, 1e6]
    assert plots.log_ticks(0.06, 0.5) == [0.1, 0.2, 0.5]
    assert len(plots.log_ticks(1e-3, 1e9)) <= 5
    ticks = plots.log_ticks(0.3, 0.45)  # no round number of the 1-2-5 series inside: plain ticks
    assert len(ticks) >= 2 and all(0.3 <= t <= 0.45 for t in ticks)
