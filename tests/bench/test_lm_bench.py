"""The language-model benchmark: every student row shares one budget, finished rows are named by
it, and the done-when figure is the share of the perplexity gap closed."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from kdistill.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
spec = importlib.util.spec_from_file_location("lm_bench", Path(__file__).parents[2] / "bench" / "lm.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

BUDGET = {"blocks": 6000, "epochs": 3, "batch": 16, "lr": 1e-3}


def _recipes(tmp_path, budget=BUDGET):
    specs = bench.rows(6, 4, 512)
    return {row: load_recipe(bench.row_recipe(row, spec, tmp_path / "teacher", budget, 0, tmp_path / "cache"))
            for row, spec in specs.items()}


def test_every_student_row_has_the_same_budget_and_cut(tmp_path):
    recipes = _recipes(tmp_path)
    assert "ce" in recipes and len(recipes) >= 5
    for row, recipe in recipes.items():
        stage = recipe.stages[0]
        assert (recipe.data.transfer, stage.epochs, stage.batch_size, stage.optimizer.lr) == (6000, 3, 16, 1e-3), row
        assert (recipe.student.from_teacher.layers, recipe.student.from_teacher.pick) == (2, "block"), row
        assert recipe.seed == 0 and stage.cache.dir == str(tmp_path / "cache"), row
    assert [t.loss for t in recipes["ce"].stages[0].loss] == ["token_ce"]
    assert recipes["forward_kl, width-pruned"].student.from_teacher.heads == 4
    assert recipes["forward_kl, width-pruned"].student.from_teacher.ffn == 512
    assert recipes["forward_kl"].student.from_teacher.heads is None


def test_hidden_terms_pair_the_cuts_layers_with_evenly_spread_teacher_layers():
    terms = bench.hidden_terms(6)
    assert [(t["student"], t["teacher"]) for t in terms] == [
        ("model.model.layers.0", "model.model.layers.2"), ("model.model.layers.1", "model.model.layers.5")]


def test_a_finished_row_of_another_budget_is_not_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "teacher_id", lambda teacher: "abcd1234")
    ran = []

    def fake_run(recipe, **kw):  # records the run instead of training
        ran.append(recipe["name"])
        (kw["runs_dir"] / recipe["name"]).mkdir(parents=True, exist_ok=True)
        (kw["runs_dir"] / recipe["name"] / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        return type("Result", (), {"summary": {"test": {}}})()

    monkeypatch.setattr("kdistill.run", fake_run)
    spec = bench.rows(6, 4, 512)["ce"]
    bench.run_row("ce", spec, tmp_path, BUDGET, 0, tmp_path)
    bench.run_row("ce", spec, tmp_path, BUDGET, 0, tmp_path)  # read back
    bench.run_row("ce", spec, tmp_path, {**BUDGET, "epochs": 1}, 0, tmp_path)
    bench.run_row("ce", bench.rows(6, 4, 512)["forward_kl"], tmp_path, BUDGET, 0, tmp_path)  # same name, other loss
    assert ran == ["lm-ce-s0-n6000e3-abcd1234", "lm-ce-s0-n6000e1-abcd1234", "lm-ce-s0-n6000e3-abcd1234"]


def _summary(ppl):
    return {"test": {"student": {"perplexity": ppl, "speedup_b16": 2.0}}}


def test_gap_closed_is_the_share_of_the_ce_students_gap_to_the_teacher():
    results = {"ce": [_summary(120.0)], "forward_kl": [_summary(105.0)], "jsd": [_summary(110.0)]}
    line = bench.gap_closed(results, teacher_ppl=100.0)[-1]
    assert "cut + forward KL (perplexity 105.00)" in line
    assert "Gap to the teacher: 20.00 = 20%" in line and "Gap closed by distillation: 75%" in line
    assert "2.00x" in line


def test_the_width_pruned_row_is_judged_against_its_own_cross_entropy_row():
    results = {"ce": [_summary(120.0)], "forward_kl": [_summary(105.0)],
               "forward_kl, width-pruned": [_summary(104.0)], "ce, width-pruned": [_summary(130.0)]}
    lines = bench.gap_closed(results, teacher_ppl=100.0)
    assert "cut + forward KL (perplexity 105.00)" in lines[1]  # the narrower cut is not the best 2-layer row
    assert "perplexity 104.00 against 130.00" in lines[-1] and "gap closed 87%" in lines[-1]


@pytest.mark.parametrize("rows, said", [(["forward_kl", "no_such_row"], "no_such_row"),
                                        (["ce", "ce, width-pruned"], "at least one of")])  # a baseline alone
def test_rows_are_checked_before_anything_is_built(rows, said, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lm.py", "--rows", *rows])
    monkeypatch.setattr(bench.lm_teacher, "main", lambda *a: pytest.fail("the teacher was built"))
    with pytest.raises(SystemExit):
        bench.main()
    assert said in capsys.readouterr().err


def test_only_the_whole_table_on_the_fixed_budget_writes_lm_md():
    fixed = {"blocks": bench.BLOCKS, "epochs": bench.EPOCHS, "batch": 16, "lr": bench.LR}
    assert bench.results_name(fixed, [0], partial=False) == "lm.md"
    assert bench.results_name(fixed, [0], partial=True) == "lm-partial.md"
    assert bench.results_name(fixed, [0, 1, 2], partial=True) == "lm-seeds.md"
    assert bench.results_name({**fixed, "epochs": 3}, [0], partial=True) == "lm-n6000e3.md"
    assert bench.results_name({**fixed, "lr": 3e-3}, [0], partial=False) == "lm-n6000e1-lr0.003.md"


def test_a_row_of_another_learning_rate_is_named_apart():
    assert bench.budget_tag(BUDGET) == "n6000e3"
    assert bench.budget_tag({**BUDGET, "lr": 3e-3}) == "n6000e3-lr0.003"


def test_a_budget_with_validation_blocks_keeps_every_rows_best_epoch(tmp_path):
    assert all(not r.stages[0].keep_best and r.data.val == 0 for r in _recipes(tmp_path).values())
    recipes = _recipes(tmp_path, {**BUDGET, "val": 64})
    assert all(r.stages[0].keep_best and r.data.val == 64 for r in recipes.values())
    assert bench.budget_tag({**BUDGET, "val": 64}) == "n6000e3-best64"
    assert bench.results_name({**BUDGET, "val": 64}, [0, 1], partial=True) == "lm-n6000e3-best64-seeds.md"
