"""The label-efficiency benchmark's recipes are valid, and its table is computed from its records."""

import importlib.util
from pathlib import Path

import pytest

from kdistill.recipe import load_recipe

spec = importlib.util.spec_from_file_location(
    "label_efficiency", Path(__file__).parents[2] / "bench" / "label_efficiency.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("row", bench.ROWS)
@pytest.mark.parametrize("labels", list(bench.FRACTIONS))
def test_every_cell_is_a_valid_recipe(row, labels):
    recipe = load_recipe(bench.cell_recipe(row, bench.FRACTIONS[labels], 0, 5, quick=False))
    assert recipe.data.val == 5000
    assert recipe.data.labelled == round(bench.FRACTIONS[labels] * 55000)
    if row != "labels alone":
        assert recipe.stages[0].data == "labelled+transfer"


def test_table_is_mean_and_std_of_records(tmp_path):
    log = bench.CellLog(tmp_path / "cells.jsonl", key=("row", "labels", "seed"))
    for record in [{"row": "KD", "labels": "1%", "seed": s, "accuracy": a, "teacher_accuracy": 0.94,
                "student_params": 100, "seconds": 1.0} for s, a in enumerate([0.90, 0.92])]:
        log.add(record)
    assert log.done(row="KD", labels="1%", seed=1) and not log.done(row="KD", labels="1%", seed=2)
    assert len(bench.CellLog(tmp_path / "cells.jsonl", key=log.key).records) == 2  # read back
    text = bench.write_table(log, tmp_path / "t.md", 5, [0, 1])
    assert "| KD | 91.00 ± 1.41 (n=2) | - | - |" in text
    assert "Teacher test accuracy: 94.00%" in text
