"""kdistill.train.teacher: teacher outputs computed once and reused only while valid, and where a
stage's teacher features come from (none, memory, live, disk), by one declared rule."""

import itertools

import pytest
import torch

from kdistill.data.augment import Augment, shift_flip
from kdistill.errors import KDistillError
from kdistill.models.zoo import build_model
from kdistill.objective.core import build_objective
from kdistill.recipe import StageSpec
from kdistill.train.teacher import MODE_RULE, TeacherMemo, teacher_mode, teacher_source

CPU = torch.device("cpu")


def _teacher():
    teacher = build_model("cnn", channels=[4, 8], hidden=16, image_size=8)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _counting(teacher):
    """Count the teacher's forward passes (one per batch)."""
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _live(teacher, x):
    teacher.eval()
    with torch.no_grad():
        s1 = teacher.stages(x)
        return dict(zip(("stages.1", "logits"), (s1, teacher.head(s1))))


# ---- TeacherMemo ----------------------------------------------------------------------------

def test_memo_outputs_and_their_precision():
    teacher, x = _teacher(), torch.randn(12, 1, 8, 8)
    out = TeacherMemo().outputs(teacher, ["logits", "stages.1"], x, CPU, batch_size=5)
    # float32, intermediate features too: the live teacher's numbers (float16 was ~1e-3 off)
    assert out["logits"].dtype == torch.float32 and out["stages.1"].dtype == torch.float32
    live = _live(teacher, x)
    torch.testing.assert_close(out["logits"], live["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["stages.1"], live["stages.1"], rtol=1e-5, atol=1e-6)


def test_memo_reuses_outputs_for_the_same_teacher_and_data():
    teacher, x = _teacher(), torch.randn(12, 1, 8, 8)
    calls, memo = _counting(teacher), TeacherMemo()
    first = memo.outputs(teacher, ["logits"], x, CPU)
    assert len(calls) == 1
    again = memo.outputs(teacher, ["logits"], x.clone(), CPU)  # equal content, another tensor
    assert len(calls) == 1 and again["logits"] is first["logits"]


def test_memo_computes_only_the_missing_taps():
    teacher, x = _teacher(), torch.randn(6, 1, 8, 8)
    memo = TeacherMemo()
    first = memo.outputs(teacher, ["logits"], x, CPU)
    calls = _counting(teacher)
    both = memo.outputs(teacher, ["logits", "stages.0"], x, CPU)
    assert len(calls) == 1  # one pass, for stages.0
    assert both["logits"] is first["logits"] and both["stages.0"].shape == (6, 4, 4, 4)


def test_memo_recomputes_for_changed_weights():
    teacher, x = _teacher(), torch.randn(6, 1, 8, 8)
    memo = TeacherMemo()
    before = memo.outputs(teacher, ["logits"], x, CPU)["logits"]
    with torch.no_grad():
        teacher.head[-1].bias.add_(1.0)  # every logit moves up by 1
    after = memo.outputs(teacher, ["logits"], x, CPU)["logits"]
    torch.testing.assert_close(after, before + 1.0, rtol=1e-5, atol=1e-5)


def test_memo_recomputes_for_changed_data():
    teacher, x = _teacher(), torch.randn(6, 1, 8, 8)
    memo = TeacherMemo()
    memo.outputs(teacher, ["logits"], x, CPU)
    y = x.clone()
    y[0, 0, 0, 0] += 1.0  # one pixel
    calls = _counting(teacher)
    out = memo.outputs(teacher, ["logits"], y, CPU)
    assert len(calls) == 1
    torch.testing.assert_close(out["logits"], _live(teacher, y)["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("entries, recomputed", [(1, True), (2, False)])
def test_memo_evicts_the_least_recently_used_beyond_entries(entries, recomputed):
    teacher = _teacher()
    a, b = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    memo = TeacherMemo(entries=entries)
    first = memo.outputs(teacher, ["logits"], a, CPU)
    memo.outputs(teacher, ["logits"], b, CPU)
    assert len(memo._store) == entries
    calls = _counting(teacher)
    again = memo.outputs(teacher, ["logits"], a, CPU)
    assert (len(calls) == 1) == recomputed and (again["logits"] is not first["logits"]) == recomputed


def test_memo_keeps_the_most_recently_used():
    teacher = _teacher()
    a, b, c = (torch.randn(4, 1, 8, 8) for _ in range(3))
    memo = TeacherMemo(entries=2)
    memo.outputs(teacher, ["logits"], a, CPU)
    memo.outputs(teacher, ["logits"], b, CPU)
    memo.outputs(teacher, ["logits"], a, CPU)  # a used again: b is now the oldest
    memo.outputs(teacher, ["logits"], c, CPU)  # evicts b
    calls = _counting(teacher)
    memo.outputs(teacher, ["logits"], a, CPU)
    assert len(calls) == 0
    memo.outputs(teacher, ["logits"], b, CPU)
    assert len(calls) == 1


# ---- teacher_mode: the rule -------------------------------------------------------------------

def _expected_mode(reads_teacher, decoded_at_random, cache, cache_teacher, augmented):
    """The rule as the issue states it, written independently of MODE_RULE's table."""
    if not reads_teacher:
        return "none"
    if decoded_at_random:
        return "refused" if cache else "live"
    if cache:
        return "disk"
    return "memory" if cache_teacher and not augmented else "live"


@pytest.mark.parametrize("case", list(itertools.product((False, True), repeat=5)))
def test_teacher_mode_over_every_input(case):
    assert teacher_mode(*case) == _expected_mode(*case)
    # the table's rows do not overlap: each case is one row's, whatever their order
    matching = [mode for row, mode in MODE_RULE if all(r is None or r == c for r, c in zip(row, case))]
    assert len(matching) == 1


def test_teacher_mode_rows_are_the_docstring_table():
    from kdistill.train import teacher

    word = {None: "any", True: "yes", False: "no"}
    table = [line.split() for line in teacher.__doc__.splitlines() if line.startswith(("yes ", "no "))]
    assert [(tuple(cells[:5]), cells[5]) for cells in table] == \
        [(tuple(word[r] for r in row), mode) for row, mode in MODE_RULE]
    assert {mode for _, mode in MODE_RULE} == {"none", "refused", "live", "disk", "memory"}


# ---- teacher_source ---------------------------------------------------------------------------

KD_HINT = [{"loss": "kd"}, {"loss": "hint", "student": "stages.1", "teacher": "stages.1"}]


def _source(tmp_path=None, loss=KD_HINT, teacher="default", x=None, **stage):
    teacher = _teacher() if teacher == "default" else teacher
    x = torch.randn(10, 1, 8, 8) if x is None else x
    spec = StageSpec(name="s", loss=loss, **stage)
    objective = build_objective([t.model_dump() for t in spec.loss])
    return teacher_source(teacher, objective, x, spec, seed=0, device=CPU), teacher, x


def test_mode_none_without_teacher_terms_or_teacher():
    source, _, _ = _source(loss=[{"loss": "ce"}])
    assert source.mode == "none"
    assert source.features(torch.zeros(2, 1, 8, 8), torch.arange(2), None, CPU) is None
    source, _, _ = _source(teacher=None)
    assert source.mode == "none"


def test_mode_memory_without_augmentation():
    source, _, _ = _source()
    assert source.mode == "memory"
    assert set(source.memory) == {"logits", "stages.1"}


@pytest.mark.parametrize("stage", [{"cache_teacher": False}, {"augment": {"shift": 1}}, {"augment": {"flip": True}}])
def test_mode_live_with_random_augmentation_or_no_caching(stage):
    source, _, _ = _source(**stage)
    assert source.mode == "live" and source.memory is None and source.store is None


@pytest.mark.parametrize("augment", [{}, {"shift": 1, "flip": True}])
def test_mode_disk_with_a_cache_section(tmp_path, augment):
    source, _, _ = _source(augment=augment, cache={"dir": str(tmp_path), "views": 2 if augment else 1})
    assert source.mode == "disk" and source.memory is None
    assert any(tmp_path.iterdir())


def test_memory_features_equal_the_live_teachers():
    source, teacher, x = _source()
    index = torch.tensor([7, 0, 3])
    feats = source.features(x[index], index, None, CPU)
    live = _live(teacher, x[index])
    assert feats["logits"].dtype == torch.float32 and feats["stages.1"].dtype == torch.float32
    torch.testing.assert_close(feats["logits"], live["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats["stages.1"], live["stages.1"], rtol=1e-5, atol=1e-6)
    # and the live mode gives the same features
    live_source, _, _ = _source(teacher=teacher, x=x, cache_teacher=False)
    assert live_source.views is None
    other = live_source.features(x[index], index, None, CPU)
    for name in ("logits", "stages.1"):
        torch.testing.assert_close(other[name], feats[name], rtol=1e-5, atol=1e-6)


def test_memory_outputs_are_the_eval_mode_teachers_and_its_mode_is_kept():
    teacher = _teacher()
    teacher.train()  # BatchNorm would use batch statistics in train mode
    source, _, x = _source(teacher=teacher)
    assert teacher.training and all(m.training for m in teacher.modules())
    live = _live(teacher, x)
    torch.testing.assert_close(source.memory["logits"], live["logits"], rtol=1e-5, atol=1e-5)


def test_a_disk_cache_of_inputs_decoded_at_random_is_refused(tmp_path):
    x = torch.randn(10, 1, 8, 8)
    x.random = True  # as Inputs of a source drawing random crops / flips as it decodes
    with pytest.raises(KDistillError, match=r"stages \(s\): cache stores the teacher's outputs of fixed views"):
        _source(x=x, cache={"dir": str(tmp_path)})
    assert not any(tmp_path.iterdir())
    source, _, _ = _source(x=x)  # without a cache: live, each new view through the teacher
    assert source.mode == "live"


def test_disk_cache_with_augmentation_shows_the_student_the_teachers_view(tmp_path):
    x = torch.rand(10, 1, 8, 8)
    source, teacher, x = _source(x=x, augment={"shift": 2, "flip": True},
                                 cache={"dir": str(tmp_path), "views": 3})
    assert source.mode == "disk" and source.store.views == 3
    index = torch.tensor([9, 2, 5, 0, 2])
    xb, view = Augment(2, True, views=source.views)(x[index], index, torch.Generator().manual_seed(1))
    assert view.shape == (5,) and 0 <= int(view.min()) and int(view.max()) < 3
    # the student's view is the cached one...
    expected = shift_flip(x[index], source.store.params[index, view], 2)
    assert torch.equal(xb, expected)
    assert not torch.equal(xb, x[index])  # (the views do move the images)
    # ...and the cached features are the teacher's on that very view
    feats = source.features(xb, index, view, CPU)
    live = _live(teacher, xb)
    torch.testing.assert_close(feats["logits"], live["logits"], rtol=1e-3, atol=2e-3)  # stored as float16
    torch.testing.assert_close(feats["stages.1"], live["stages.1"], rtol=1e-3, atol=2e-3)
    source.close()
    assert all(not m._forward_hooks for m in teacher.modules())


def test_close_removes_the_teachers_hooks():
    source, teacher, _ = _source(cache_teacher=False)
    assert teacher.stages[1]._forward_hooks
    source.close()
    assert not teacher.stages[1]._forward_hooks
