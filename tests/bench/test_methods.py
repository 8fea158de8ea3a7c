"""The methods benchmark's recipes are valid, every method has a row, and its table is built from its records."""

import importlib.util
import sys
from pathlib import Path

import pytest

from kdistill.losses import LOSSES
from kdistill.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
spec = importlib.util.spec_from_file_location("methods", Path(__file__).parents[2] / "bench" / "methods.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

ISSUE_METHODS = {"kd", "hint", "vid", "at", "rkd", "pkt", "sp", "cc", "nst", "fsp", "crd", "dkd", "dist", "multi_kd"}


def _losses(recipe) -> set[str]:
    return {term.loss for stage in recipe.stages for term in stage.loss}


@pytest.mark.parametrize("student", list(bench.STUDENTS))
@pytest.mark.parametrize("row", bench.ROWS)
def test_every_cell_is_a_valid_recipe(row, student):
    tree = bench.cell_recipe(row, student, 0, 2, {"second": "second.safetensors"})
    if tree is None:  # a spatial method on the MLP
        assert student == "MLP" and row in ("AT", "NST", "FSP")
        return
    recipe = load_recipe(tree)
    assert recipe.data.val == 5000 and recipe.data.labelled == 55000
    assert recipe.stages[-1].epochs == 2 and all(s.data == "labelled" for s in recipe.stages)
    if row == "no distillation":
        assert _losses(recipe) == {"ce"}


def test_the_rows_cover_every_method_of_the_issue():
    covered = set().union(*(_losses(load_recipe(bench.cell_recipe(r, "small CNN", 0, 2, {"second": "w"})))
                            for r in bench.ROWS))
    assert ISSUE_METHODS <= covered and ISSUE_METHODS <= set(LOSSES)


def test_table_is_mean_and_std_of_records(tmp_path):
    log = bench.CellLog(tmp_path / "cells.jsonl", key=("row", "student", "seed"))
    for seed, acc in enumerate([0.90, 0.92]):
        log.add({"row": "KD", "student": "MLP", "seed": seed, "accuracy": acc, "val_accuracy": acc - 0.01,
                 "teacher_accuracy": 0.94, "teacher_params": 1000, "student_params": 100, "seconds": 10.0})
    text = bench.write_table(log, tmp_path / "t.md", 2, [0, 1], second=0.9)
    kd = next(line for line in text.splitlines() if line.startswith("| KD |"))
    assert kd == "| KD | - | 91.00 ± 1.41 (n=2) | - | 90.00 ± 1.41 | 2 | -, 10 |"
    at = next(line for line in text.splitlines() if line.startswith("| AT |"))
    assert "n/a" in at  # the MLP has no feature map
    assert "94.00%" in text and "90.00%" in text
