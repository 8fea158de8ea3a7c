import pytest

from kdistill.errors import KDistillError
from kdistill.recipe import apply_override, load_recipe


def _tree():
    return {
        "name": "t",
        "teacher": {"model": "cnn"},
        "student": {"model": "mlp"},
        "stages": [
            {"name": "distil", "data": "transfer", "loss": [{"loss": "kd"}]},
            {"name": "finetune", "loss": [{"loss": "ce"}], "init_from": "distil"},
        ],
    }


def test_valid_recipe_and_defaults():
    recipe = load_recipe(_tree())
    assert recipe.stages[0].optimizer.name == "sgd" and recipe.device == "auto"
    assert recipe.stages[1].loss[0].student is None  # the loss decides: logits for ce


def test_unknown_key_names_field_and_closest():
    tree = _tree()
    tree["stages"][0]["epocs"] = 3
    with pytest.raises(KDistillError, match=r"stages\.0\.epocs.*did you mean 'epochs'"):
        load_recipe(tree)
    tree = _tree()
    tree["studnet"] = tree.pop("student")
    with pytest.raises(KDistillError, match="did you mean 'student'"):
        load_recipe(tree)


def test_wrong_type_names_field_and_value():
    with pytest.raises(KDistillError, match=r"stages\.0\.epochs.*'many'"):
        load_recipe(_tree(), ["stages.0.epochs=many"])


def test_unknown_loss_suggests_closest():
    tree = _tree()
    tree["stages"][0]["loss"][0]["loss"] = "hnt"
    with pytest.raises(KDistillError, match="hint"):
        load_recipe(tree)


def test_a_stage_whose_terms_all_weigh_zero_is_refused():
    # it trained on a loss of 0.0 (a float, not a tensor): the first step failed with AttributeError
    with pytest.raises(KDistillError, match=r"stages\.0\.loss: every loss term has weight 0"):
        load_recipe(_tree(), ["stages.0.loss.0.weight=0"])
    tree = _tree()
    tree["stages"][0]["loss"] = [{"loss": "kd", "weight": 0}, {"loss": "ce"}]  # one term off: fine
    assert [t.weight for t in load_recipe(tree).stages[0].loss] == [0, 1.0]


def test_overrides_by_index_and_by_name():
    recipe = load_recipe(_tree(), ["stages.distil.epochs=4", "stages.1.batch_size=16", "seed=7",
                                   "stages.distil.loss.kd.args.temperature=2"])
    assert recipe.stages[0].epochs == 4 and recipe.stages[1].batch_size == 16 and recipe.seed == 7
    assert recipe.stages[0].loss[0].args == {"temperature": 2}


def test_bad_overrides_fail_clearly():
    with pytest.raises(KDistillError, match="key.sub=value"):
        apply_override(_tree(), "seed")
    with pytest.raises(KDistillError, match="no item 'distill'"):
        apply_override(_tree(), "stages.distill.epochs=1")


def test_consistency_checks():
    tree = _tree()
    tree["stages"][1]["init_from"] = "later"
    with pytest.raises(KDistillError, match="init_from"):
        load_recipe(tree)
    tree = _tree()
    del tree["teacher"]
    with pytest.raises(KDistillError, match="no teacher"):
        load_recipe(tree)
    with pytest.raises(KDistillError, match="only for train: teacher"):
        load_recipe(_tree(), ["stages.0.data=full"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(KDistillError, match="not found"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("stages: [\n")
    with pytest.raises(KDistillError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_l2_start_must_point_backwards():
    tree = _tree()
    tree["stages"][0]["loss"].append({"loss": "l2_start", "args": {"start": "finetune"}})
    with pytest.raises(KDistillError, match="l2_start start 'finetune'"):
        load_recipe(tree)
    tree["stages"][0]["loss"][-1]["args"]["start"] = "init"
    assert load_recipe(tree).stages[0].loss[-1].loss == "l2_start"


def test_extra_teachers_need_plain_names_and_a_main_teacher():
    tree = _tree()
    tree["teachers"] = {"second one": {"model": "cnn"}}
    with pytest.raises(KDistillError, match="plain identifier"):
        load_recipe(tree)
    tree["teachers"] = {"second": {"model": "cnn"}}
    assert "second" in load_recipe(tree).teachers
    del tree["teacher"]
    tree["stages"] = [{"name": "s", "loss": [{"loss": "ce"}]}]
    with pytest.raises(KDistillError, match="need a main 'teacher'"):
        load_recipe(tree)


def test_keep_best_needs_a_validation_set():
    stage = {"name": "s", "keep_best": True}
    with pytest.raises(KDistillError, match=r"stages\.0\.keep_best: .*set data\.val"):
        load_recipe({"student": {"model": "mlp"}, "stages": [stage]})
    assert load_recipe({"student": {"model": "mlp"}, "data": {"val": 50}, "stages": [stage]}).stages[0].keep_best
