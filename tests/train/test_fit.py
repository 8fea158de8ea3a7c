"""kdistill.train.fit: stages trained in order, each from the weights it names, checkpoints, a
clean stop, and the teacher frozen while a student learns from it."""

import threading

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.zoo import build_model
from kdistill.pipeline import build_pipeline
from kdistill.recipe import load_recipe
from kdistill.train.checkpoint import load_latest
from kdistill.models.infer import freeze
from kdistill.train.fit import fit

TEACHER = {"model": "cnn", "args": {"channels": [4, 8], "hidden": 16, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}


class Out:
    """What ``fit`` writes to: a folder for checkpoints and the records it logs."""

    def __init__(self, path=None):
        self.path, self.lines, self.records = path, 0, []

    def log(self, record):
        self.records.append(record)
        self.lines += 1


def _pipeline(stages, checkpoint=False, **extra):
    recipe = load_recipe({"name": "fit", "seed": 0, "device": "cpu", "latency": False,
                          "data": {"source": "digits", "labelled": 60, "transfer": 100},
                          "teacher": TEACHER, "student": STUDENT, "stages": stages,
                          "checkpoint": {"enabled": checkpoint}, **extra})
    return build_pipeline(recipe)


def _stage(name, **kw):
    return {"name": name, "epochs": 1, "batch_size": 32, **kw}


def test_stage_times_and_epoch_records():
    p = _pipeline([_stage("teacher", train="teacher", data="full", batch_size=256),
                   _stage("distil", data="transfer", epochs=2, loss=[{"loss": "kd"}])])
    out = Out()
    times = fit(p, out)
    assert list(times) == ["teacher", "distil"]
    assert all(isinstance(t, float) and t > 0 for t in times.values())
    assert out.lines == 3 and [(r["stage"], r["model"], r["epoch"]) for r in out.records] == [
        ("teacher", "teacher", 1), ("distil", "student", 1), ("distil", "student", 2)]
    assert "accuracy" in out.records[0]["test"]  # no val set: judged on the test set
    assert {"loss", "kd", "lr"} <= set(out.records[-1]["train"])


def test_init_from_starts_a_stage_from_an_earlier_stages_end(tmp_path):
    p = _pipeline([_stage("a", data="labelled"),
                   _stage("b", data="labelled"),  # moves the student on
                   _stage("c", data="labelled", init_from="a")],
                  checkpoint=True)
    fit(p, Out(tmp_path))
    checkpoint, _ = load_latest(tmp_path / "checkpoints")
    assert set(checkpoint) == {"version", "recipe", "metrics_lines", "state"}
    assert set(checkpoint["state"]) == {"fit", "models", "objectives", "features"}  # no loop: between stages
    state = checkpoint["state"]["fit"]
    assert state["stage"] == 3  # the final checkpoint, all stages done
    ends, start = state["ends"], state["starts"]["c"]
    assert list(ends) == ["a", "b", "c"]
    assert all(torch.equal(start[k], ends["a"][k]) for k in start)
    assert not all(torch.equal(start[k], ends["b"][k]) for k in start)
    assert not all(torch.equal(ends["c"][k], ends["a"][k]) for k in start)  # and c trained from there


def test_a_set_stop_event_checkpoints_then_stops(tmp_path):
    p = _pipeline([_stage("a", data="transfer", loss=[{"loss": "kd"}]), _stage("b")], checkpoint=True)
    stop = threading.Event()
    stop.set()  # as SIGINT would
    out = Out(tmp_path)
    with pytest.raises(KDistillError, match=r"^a: stopped by a signal at epoch 1, step 1$"):
        fit(p, out, stop=stop)
    checkpoint, path = load_latest(tmp_path / "checkpoints")
    assert path.name == "ckpt-s00-e00000-b0000001.pt"
    state = checkpoint["state"]
    assert set(state) == {"fit", "models", "objectives", "features", "loop"}
    assert state["fit"]["stage"] == 0 and state["loop"]["epoch"] == 0 and state["loop"]["step"] == 1
    assert "teacher" not in state["models"]  # no stage trains it
    assert out.records == []  # stopped inside the first epoch


def test_without_checkpoints_nothing_is_written(tmp_path):
    p = _pipeline([_stage("a")])
    fit(p, Out(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_freeze_makes_eval_mode_and_no_gradients():
    model = build_model("cnn", channels=[4, 8], image_size=8, dropout=0.5)
    model.train()
    assert freeze(model) is model
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)  # no dropout, BatchNorm running statistics untouched
    bn = model.stages[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and torch.equal(bn.running_mean, torch.zeros(4))


def test_teacher_frozen_while_a_student_learns_and_trained_in_its_own_stage():
    p = _pipeline([_stage("teacher", train="teacher", data="full", batch_size=256),
                   _stage("distil", data="transfer", loss=[{"loss": "kd"}])])
    teacher = p.models["teacher"]
    assert all(q.requires_grad for q in teacher.parameters())  # a stage trains it
    seen = {}
    original = p.objectives["distil"].forward

    def spy(*args, **kw):
        seen.setdefault("training", teacher.training)
        seen.setdefault("grad", any(q.requires_grad for q in teacher.parameters()))
        return original(*args, **kw)

    p.objectives["distil"].forward = spy
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    fit(p, Out())
    assert seen == {"training": False, "grad": False}
    assert not teacher.training and not any(q.requires_grad for q in teacher.parameters())
    # the teacher stage changed its weights; the distil stage left them as they were after it
    assert not all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_init_from_a_stage_of_another_architecture_fails_in_one_line():
    with pytest.raises(KDistillError, match="init_from"):
        p = _pipeline([_stage("teacher", train="teacher", data="full", batch_size=256),
                       _stage("student", data="labelled", init_from="teacher")])
        fit(p, Out())


def _keep_best(scores, stop_after=None):
    """A 3-epoch keep_best stage whose epochs score ``scores`` in turn; the student's weights at
    each evaluated epoch are recorded (``stop``: set once ``stop_after`` epochs are judged)."""
    p = _pipeline([_stage("distil", data="transfer", epochs=3, keep_best=True, loss=[{"loss": "kd"}])],
                  checkpoint=True, **{"data": {"source": "digits", "labelled": 60, "val": 40, "transfer": 100}})
    seen, stop = [], threading.Event()

    def score(metrics):
        assert "accuracy" in metrics  # the family's epoch metrics, on the validation set
        seen.append({k: v.clone() for k, v in p.models["student"].state_dict().items()})
        if len(seen) == stop_after:
            stop.set()
        return scores[len(seen) - 1]

    p.family = type(p.family)()  # an instance of its own, so the patch stays in this pipeline
    p.family.selection_score = score
    return p, seen, stop


@pytest.mark.parametrize("scores, kept", [([0.2, 0.9, 0.5], 2), ([0.9, 0.9, 0.1], 1), ([0.1, 0.2, 0.3], 3)])
def test_keep_best_ends_a_stage_on_its_best_epoch(tmp_path, scores, kept):
    p, seen, _ = _keep_best(scores)
    out = Out(tmp_path)
    fit(p, out)
    final = p.models["student"].state_dict()
    assert all(torch.equal(final[k], seen[kept - 1][k]) for k in final)  # ties keep the earlier epoch
    assert [r.get("kept_epoch") for r in out.records] == [None, None, None, kept]
    assert all("val" in r for r in out.records[:3])  # judged on the validation set, not the test set
    state, _ = load_latest(tmp_path / "checkpoints")
    ends = state["state"]["fit"]["ends"]
    assert all(torch.equal(ends["distil"][k], final[k]) for k in final)  # the next stage starts there


def test_keep_best_resumes_exactly(tmp_path):
    """Stopped after the best epoch (2 of 3), resumed in a fresh pipeline: the same kept weights."""
    p, seen, _ = _keep_best([0.2, 0.9, 0.5])
    fit(p, Out(tmp_path / "a"))
    whole = p.models["student"].state_dict()
    p, _, stop = _keep_best([0.2, 0.9, 0.5], stop_after=2)
    with pytest.raises(KDistillError, match="stopped by a signal after epoch 2"):
        fit(p, Out(tmp_path / "b"), stop=stop)
    state, _ = load_latest(tmp_path / "b" / "checkpoints")
    assert state["state"]["fit"]["best"]["distil"][0] == 2
    fresh, _, _ = _keep_best([0.5])  # only epoch 3 is judged after the resume; lower than epoch 2's
    fit(fresh, Out(tmp_path / "b"), resume=state)
    resumed = fresh.models["student"].state_dict()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_keep_best_without_a_validation_set_is_refused_before_training(tmp_path):
    import dataclasses

    p, seen, _ = _keep_best([0.5, 0.5, 0.5])
    p.splits = dataclasses.replace(p.splits, val_set=None)  # as a user's own Splits might come
    with pytest.raises(KDistillError, match="keep_best: .*give Splits with a val_set"):
        fit(p, Out(tmp_path))
    assert seen == []


def test_the_checkpoint_records_the_recipe_and_an_edited_one_is_named_field_by_field(tmp_path):
    from kdistill.recipe import dump_recipe
    from kdistill.train.fit import check_same_recipe

    tree = {"name": "r", "latency": False, "data": {"source": "digits", "labelled": 50},
            "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
            "stages": [{"name": "a", "data": "labelled", "epochs": 24, "loss": [{"loss": "ce"}]}]}
    state = {"recipe": dump_recipe(load_recipe(tree))}
    check_same_recipe(load_recipe(tree), state, "recipe.yaml")  # the same: resumed
    check_same_recipe(load_recipe({**tree, "seed": 5}), {}, "recipe.yaml")  # an older checkpoint: resumed as before
    edited = {**tree, "seed": 5, "stages": [{**tree["stages"][0], "epochs": 2, "name": "b" * 40}],
              "student": {**tree["student"], "args": {"in_features": 64, "hidden": [16, 8]}}}
    with pytest.raises(KDistillError) as err:
        check_same_recipe(load_recipe(edited), state, "runs/r.incomplete/recipe.yaml")
    text = str(err.value)
    assert text.startswith("resume: runs/r.incomplete/recipe.yaml was edited since the run started (")
    assert "(seed 0 -> 5, stages.0.name a -> bbbbbbbbbbbbbbbbbbbbb..., stages.0.epochs 24 -> 2 and 1 more)" in text
    assert text.endswith("restore it, or start the run again (--overwrite).") and "\n" not in text
    with pytest.raises(KDistillError, match=r"\(student.args.hidden.1 \(absent\) -> 8\)"):
        check_same_recipe(load_recipe({**tree, "student": edited["student"]}), state, "recipe.yaml")
