import time

import pytest

from kdistill.errors import KDistillError, shown
from kdistill.recipe import MAX_RECIPE_BYTES, apply_override, load_recipe


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


# ----------------------------------------------------------------------------- size limits


def _alias_bomb(levels: int, width: int = 9) -> str:
    """``levels`` lines of ``&aN [*aN-1, *aN-1, ...]``: a few hundred bytes that expand to
    width**levels values for whatever walks them."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


def _timed_error(source, overrides=()) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(KDistillError) as err:
        load_recipe(source, list(overrides))
    return str(err.value), time.perf_counter() - started


@pytest.mark.parametrize("where", ["unknown key", "typed field", "override"])
def test_alias_bomb_is_refused_at_once(tmp_path, where):
    bomb = _alias_bomb(9)  # 9**9 values expanded: formatting it once never returned
    path = tmp_path / "bomb.yaml"
    if where == "unknown key":
        path.write_text(bomb + "\nstages: [{name: s}]\n", encoding="utf8")
        message, seconds = _timed_error(path)
    elif where == "typed field":
        path.write_text(bomb.replace("a8: &a8", "name: &a8") + "\nstages: [{name: s}]\n", encoding="utf8")
        message, seconds = _timed_error(path)
    else:
        flow = "{" + bomb.replace("\n", ", ") + "}"
        message, seconds = _timed_error(_tree(), ["seed=" + flow])
    assert "holds more than 5,000 values" in message and "alias" in message
    assert ("bomb.yaml" in message) != (where == "override") and "\n" not in message and len(message) < 300
    assert seconds < 2


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("student: &m {model: mlp}\nteacher: *m\nstages:\n  - &s {name: a, loss: [{loss: kd}]}\n"
                    "  - {<<: *s, name: b}\n", encoding="utf8")
    recipe = load_recipe(path)
    assert [s.name for s in recipe.stages] == ["a", "b"] and recipe.teacher.model == "mlp"


def test_alias_inside_its_own_block_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text("name: &a [*a]\nstages: [{name: a}]\n", encoding="utf8")
    message, _ = _timed_error(tmp_path / "r.yaml")
    assert "the alias *a is inside the block it names" in message


def test_recipe_file_over_the_size_cap_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: " + "x" * MAX_RECIPE_BYTES + "\n", encoding="utf8")  # just over the cap
    message, seconds = _timed_error(path)
    assert f"is {path.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,}" in message and seconds < 1


def test_long_list_in_a_file_under_the_cap_is_refused_quickly(tmp_path):
    path = tmp_path / "long.yaml"  # 250,000 items in under 1 MB
    path.write_text("stages: [{name: s, epochs: [" + "1," * 250_000 + "1]}]\n", encoding="utf8")
    message, seconds = _timed_error(path)
    assert "holds more than 5,000 values" in message and seconds < 2


def test_huge_values_are_echoed_shortened_and_quickly():
    big = "x" * 5_000_000
    cases = [(dict(_tree(), name=big), "name"), (dict(_tree(), seed=big), "seed"), ({**_tree(), big: 1}, "unknown key"),
             (dict(_tree(), seed=[[big] * 3] * 3), "seed"), (dict(_tree(), name=10**5000), "name"),
             (dict(_tree(), stages=[{"name": "s", "loss": [{"loss": big}]}]), "unknown name")]
    for tree, expected in cases:
        message, seconds = _timed_error(tree)
        assert expected in message and "x" * 80 not in message and len(message) < 400 and seconds < 1, message[:400]


def test_huge_lists_given_as_a_dict_are_refused_unwalked():
    many = list(range(25_000_000))  # the message came after minutes; now the count stops at the cap
    for tree in (dict(_tree(), zzz=many), dict(_tree(), seed=many)):
        message, seconds = _timed_error(tree)
        assert "holds more than 5,000 values" in message and seconds < 1


def test_overrides_are_capped_and_echoed_shortened():
    message, seconds = _timed_error(_tree(), ["name=" + "x" * 5_000_000])
    assert "5,000,005 characters, over the 10,000" in message and len(message) < 300 and seconds < 1
    for override, expected in [("seed=" + "1" * 5000, "seed"), ("name=" + "y" * 9000, "not a run name"),
                               ("stages." + "z" * 9000 + ".epochs=1", "no item"), ("seed=2001-13-01", "seed"),
                               ("seed=!!timestamp 2001-01-01 99:00", "seed")]:
        message, _ = _timed_error(_tree(), [override])
        assert expected in message and "\n" not in message and len(message) < 400, message[:400]


def test_shown_is_bounded():
    assert shown("x" * 10**7) == "'" + "x" * 76 + "..." and len(shown(list(range(10**6)))) <= 80
    assert shown(10**5000) == "<an integer of 16,610 bits>" and shown("kd") == "'kd'" and shown(2**62) == str(2**62)


def test_deep_nesting_is_refused_not_a_recursion_error():
    deep: list = []
    for _ in range(3000):
        deep = [deep]
    for source, overrides in [(dict(_tree(), seed=deep), []), (_tree(), ["seed=" + "[" * 3000 + "]" * 3000]),
                              (_tree(), ["teacher.args." + "a." * 3000 + "b=1"])]:
        message, _ = _timed_error(source, overrides)
        assert "more than 50" in message and "\n" not in message
