import torch

from kdistill.models.zoo import build_model
from kdistill.objective.core import build_objective
from kdistill.models.adapters import build_adapters
from kdistill.models.taps import FeatureTaps
from kdistill.recipe import StageSpec
from kdistill.train.loop import Hooks, train_stage
from kdistill.train.state import RunState


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
                torch.device("cpu"), teacher, hooks=Hooks(lambda e, terms: log.append(terms)))
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
    # the memory keeps the teacher's features in float32: the live-teacher run trains alike
    # (within float32 rounding: the teacher's passes batch the samples otherwise)
    torch.testing.assert_close(a(x), c(x), rtol=1e-4, atol=1e-5)


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
        train_stage(model, objective, x, y, stage, torch.device("cpu"), seed=0, hooks=Hooks())
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


def _mlp_weights(stage_args: dict, loss=({"loss": "ce"},), x=None, y=None) -> torch.Tensor:
    """The weights of a small MLP (no dropout, no batch norm) after 2 epochs of ``stage_args``."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 12, generator=g) if x is None else x
    y = torch.randint(0, 4, (40,), generator=g) if y is None else y
    torch.manual_seed(0)
    model = build_model("mlp", in_features=12, num_classes=4, hidden=[16])
    stage = StageSpec(**{"name": "t", "epochs": 2, "batch_size": 10, "optimizer": {"name": "sgd", "lr": 0.1},
                         **stage_args})
    train_stage(model, build_objective(list(loss)), x, y, stage, torch.device("cpu"), seed=0,
                hooks=Hooks())
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_gradient_accumulation_matches_the_whole_batch():
    """Micro-batches (4 of an uneven 10: 3, 3, 2, 2 samples) weighted by their share add up to the
    whole batch's gradient: the same student, up to float rounding; and a real change from 1 step."""
    whole = _mlp_weights({})
    split = _mlp_weights({"accumulate": 4})
    assert torch.allclose(whole, split, atol=1e-6)
    assert not torch.allclose(whole, _mlp_weights({"epochs": 1}), atol=1e-3)


def test_terms_are_read_every_log_every_steps_before_checkpoints_and_at_the_end(monkeypatch):
    """Between readings the terms stay on the device (no wait for it each step); a checkpoint and
    the epoch's end always read them first, so nothing non-finite is saved or reported."""
    import kdistill.train.loop as loop_module

    reads, saved = [], []
    real = loop_module._read

    def counting(sums, bad, desc, epoch):
        reads.append((epoch, sum(1 for _ in saved)))
        return real(sums, bad, desc, epoch)

    monkeypatch.setattr(loop_module, "_read", counting)
    x, y = torch.randn(100, 12), torch.randint(0, 4, (100,))
    model = build_model("mlp", in_features=12, num_classes=4, hidden=[16])
    stage = StageSpec(name="t", epochs=2, batch_size=10)  # 10 steps an epoch
    log, state = [], RunState()  # the loop joins the run's state while it trains: checkpoints read it there
    hooks = Hooks(on_epoch_end=lambda e, terms: log.append(terms), log_every=4, state=state,
                  checkpoint=lambda: saved.append(state.state_dict()["loop"]["step"]), checkpoint_every=7)
    train_stage(model, build_objective([{"loss": "ce"}]), x, y, stage, torch.device("cpu"), hooks=hooks)
    # steps 4, 7 (checkpoint), 8, 10 (end) of epoch 1; 4, 8, 10 and 14 - 10 = 4 (checkpoint) of epoch 2
    assert len(reads) == 7
    assert [s for s in saved if s] == [7, 4]  # the step checkpoints; 0: the epochs' ends
    assert "loop" not in state.state_dict()  # the stage over, its loop has left
    assert all(set(terms) == {"loss", "ce", "lr"} and all(isinstance(v, float) for v in terms.values())
               for terms in log)


def test_micro_batches_keep_order_and_every_sample():
    from kdistill.data.batch import Batch
    from kdistill.train.loop import micro_batches

    batch = Batch(torch.arange(10) + 5, torch.arange(10).float()[:, None], torch.arange(10))
    parts = micro_batches(batch, 4)
    assert [len(p.index) for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat([p.index for p in parts]), batch.index)
    assert torch.equal(torch.cat([p.x for p in parts]), batch.x) and torch.equal(torch.cat([p.y for p in parts]), batch.y)
    assert micro_batches(batch, 1) == [batch] and len(micro_batches(batch, 50)) == 10


def test_bf16_autocast_runs_on_the_cpu():
    from kdistill.train.teacher import autocast

    layer = torch.nn.Linear(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp16"):  # float16 autocast is CUDA's only
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    bf16, plain = _mlp_weights({"amp": "bf16"}), _mlp_weights({})
    assert torch.isfinite(bf16).all() and not torch.equal(bf16, plain)  # trained, at bfloat16's precision
    assert torch.allclose(bf16, plain, atol=0.05)
