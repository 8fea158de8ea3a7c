import torch

from kdistill.models.zoo import build_model
from kdistill.objective.core import build_objective
from kdistill.models.adapters import build_adapters
from kdistill.models.taps import FeatureTaps
from kdistill.recipe import StageSpec
from kdistill.train.loop import Hooks, train_stage


def _setup():
    torch.manual_seed(0)
    teacher = build_model("cnn", channels=[8, 16], image_size=8).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = build_model("cnn", channels=[4, 8], image_size=8)
    objective = build_objective([{"loss": "kd"}, {"loss": "hint", "student": "stages.1", "teacher": "stages.1"}])
    x = torch.randn(64, 1, 8, 8)
    with FeatureTaps(student, ["stages.1"]) as s, FeatureTaps(teacher, ["stages.1"]) as t:
        objective.adapters = build_adapters(
            objective.feature_pairs(), s.collect(student(x[:2])), t.collect(teacher(x[:2])))
    return teacher, student, objective, x, torch.full((64,), -1)


def _train(cache: bool):
    teacher, student, objective, x, y = _setup()
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_adapter = [p.clone() for p in objective.adapters.parameters()]
    log = []
    train_stage(student, objective, x, y, StageSpec(name="t", epochs=2, batch_size=16, cache_teacher=cache),
                torch.device("cpu"), teacher, hooks=Hooks(lambda e, terms: log.append(terms), progress=False))
    return teacher, student, objective, before_teacher, before_adapter, log


def test_teacher_frozen_adapter_and_student_trained():
    teacher, student, objective, before_teacher, before_adapter, log = _train(cache=True)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before_teacher[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(objective.adapters.parameters(), before_adapter))
    assert len(log) == 2 and {"loss", "kd", "hint", "lr"} <= set(log[0])


def test_deterministic_on_cpu_and_cache_matches_live_teacher():
    _, a, *_ = _train(cache=True)
    _, b, *_ = _train(cache=True)
    _, c, *_ = _train(cache=False)
    x = torch.randn(4, 1, 8, 8)
    a.eval(), b.eval(), c.eval()
    assert torch.equal(a(x), b(x))
    # the cache keeps features in half precision, so the live-teacher run differs only slightly
    assert torch.allclose(a(x), c(x), atol=1e-2)


def test_teacher_outputs_are_reused_only_for_the_same_teacher_and_data():
    from kdistill.train.teacher import TeacherMemo

    teacher_outputs = TeacherMemo(entries=2).outputs
    teacher = build_model("cnn", channels=[4, 8], image_size=8).eval()
    x = torch.randn(20, 1, 8, 8)
    cpu = torch.device("cpu")
    first = teacher_outputs(teacher, ["logits", "stages.1"], x, cpu)
    assert torch.allclose(first["logits"], teacher(x), atol=1e-6)
    assert teacher_outputs(teacher, ["logits"], x, cpu)["logits"] is first["logits"]  # reused
    with torch.no_grad():
        teacher.head[-1].bias += 1.0  # a changed teacher
    changed = teacher_outputs(teacher, ["logits"], x, cpu)["logits"]
    assert torch.allclose(changed, first["logits"] + 1.0, atol=1e-5)
    other = teacher_outputs(teacher, ["logits"], x + 1, cpu)["logits"]  # changed data
    assert torch.allclose(other, teacher(x + 1), atol=1e-6)
    # the two most recent (teacher, data) pairs stay: alternating between them recomputes nothing
    assert teacher_outputs(teacher, ["logits"], x, cpu)["logits"] is changed
    assert teacher_outputs(teacher, ["logits"], x + 1, cpu)["logits"] is other


def test_compiled_and_channels_last_student_trains_like_the_plain_one():
    """torch.compile (a backend that needs no C compiler) and the NHWC layout change the speed only."""
    from kdistill.models.zoo import build_model
    from kdistill.objective.core import build_objective
    from kdistill.train.loop import Hooks, train_stage

    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    weights = []
    for extra in ({}, {"compile": "aot_eager", "channels_last": True}):
        torch.manual_seed(0)
        model = build_model("cnn", channels=[4, 8], image_size=8)
        objective = build_objective([{"loss": "ce"}, {"loss": "entropy", "weight": 0.1},
                                     {"loss": "scatter", "weight": 0.01, "student": "head.0"}])  # a hook under dynamo
        stage = StageSpec(name="t", epochs=2, batch_size=8, optimizer={"name": "sgd", "lr": 0.1}, **extra)
        train_stage(model, objective, x, y, stage, torch.device("cpu"), seed=0, hooks=Hooks(progress=False))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_two_workers_train_the_same_student_as_none(tmp_path):
    """The loop's order, augmentation and teacher outputs do not depend on who fetches the batches."""
    from pathlib import Path

    import yaml

    from kdistill import run

    recipe = yaml.safe_load((Path(__file__).parents[2] / "recipes" / "resumable.yaml").read_text())
    recipe["checkpoint"] = {"enabled": False}
    students = []
    for workers in (0, 2):
        tree = {**recipe, "name": f"w{workers}", "data": {**recipe["data"], "loader": {"workers": workers}}}
        students.append(run(tree, runs_dir=tmp_path, progress=False).models["student"].state_dict())
    assert students[0].keys() == students[1].keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])
