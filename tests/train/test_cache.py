"""The teacher-output cache on disk: same outputs as the live teacher, views, reuse, checks."""

import json
import warnings

import numpy as np
import pytest
import torch

from kdistill.data.fingerprint import file_sum
from kdistill.train import cache as cache_module
from kdistill.train.cache import (CacheDamaged, TeacherCache, build_cache, compress_logits, expand_logits,
                                  verify_cache)
from kdistill.data.augment import shift_flip
from kdistill.errors import KDistillError
from kdistill.models.zoo import build_model
from kdistill.objective.core import build_objective
from kdistill.recipe import StageSpec
from kdistill.train.loop import Hooks, train_stage

TAPS = ["logits", "stages.1"]


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return build_model("cnn", channels=[4, 8], image_size=8).eval()


@pytest.fixture
def x():
    return torch.randn(40, 1, 8, 8)


def resum(folder, name):
    """``meta.json`` made to record the file ``name`` as it now is."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf8"))
    meta["sums"][name] = [(folder / name).stat().st_size, file_sum(folder / name)]
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf8")


def live(teacher, xb):
    from kdistill.models.taps import FeatureTaps

    with FeatureTaps(teacher, TAPS, "teacher") as taps, torch.no_grad():
        return taps.collect(teacher(xb))


def test_topk_logits_keep_the_top_probabilities_and_spread_the_rest():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0, -2.0]])
    values, indices, rest = compress_logits(logits, 2)
    full = expand_logits(values, indices, rest, 5)
    p, q = logits.softmax(-1), full.softmax(-1)
    assert torch.allclose(q[0, :2], p[0, :2], atol=1e-6)  # the kept classes: their exact probabilities
    assert torch.allclose(q[0, 2:], (1 - p[0, :2].sum()).expand(3) / 3, atol=1e-6)  # the rest, evenly


def test_cached_outputs_equal_the_live_teacher(teacher, x, tmp_path):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu", dtype="float32", batch_size=16)
    index = torch.tensor([3, 0, 39, 17])
    got = cache.get(TAPS, index)
    want = live(teacher, x[index])
    for name in TAPS:
        assert torch.allclose(got[name], want[name], atol=1e-5)
    half = build_cache(teacher, TAPS, x, tmp_path, "cpu")  # default float16: a different cache
    assert half.folder != cache.folder
    assert torch.allclose(half.get(TAPS, index)["stages.1"], want["stages.1"], rtol=2e-3, atol=2e-3)


def test_cache_is_reused_and_keyed_by_teacher_and_data(teacher, x, tmp_path):
    first = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    calls = []
    handle = teacher.register_forward_hook(lambda *a: calls.append(1))
    again = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    assert again.folder == first.folder and not calls  # no teacher pass the second time
    assert build_cache(teacher, TAPS, x, tmp_path, "cpu", seed=7).folder == first.folder and not calls  # no views
    handle.remove()
    assert build_cache(teacher, TAPS, x + 1, tmp_path, "cpu").folder != first.folder
    with torch.no_grad():
        teacher.head[-1].bias += 1
    assert build_cache(teacher, TAPS, x, tmp_path, "cpu").folder != first.folder


def test_unfinished_cache_is_rebuilt(teacher, x, tmp_path):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    (cache.folder / "meta.json").unlink()  # a build that died before its last write
    with pytest.raises(KDistillError, match="not a finished cache"):
        TeacherCache(cache.folder)
    assert build_cache(teacher, TAPS, x, tmp_path, "cpu").get(TAPS, torch.tensor([1]))["logits"].shape == (1, 10)


def test_augmented_views_are_the_views_the_teacher_saw(teacher, x, tmp_path):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu", augment={"shift": 2, "flip": True}, views=3,
                        dtype="float32")
    assert cache.params.shape == (40, 3, 3)
    index, view = torch.tensor([5, 6, 7]), torch.tensor([2, 0, 1])
    views = shift_flip(x[index], cache.params[index, view], 2)
    assert torch.allclose(cache.get(["logits"], index, view)["logits"], live(teacher, views)["logits"], atol=1e-5)
    assert not torch.equal(cache.params[:, 0], cache.params[:, 1])  # the views differ
    with pytest.raises(KDistillError, match="without augmentation"):
        build_cache(teacher, TAPS, x, tmp_path, "cpu", views=2)


def test_verify_catches_a_corrupt_shard(teacher, x, tmp_path):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    worst = verify_cache(cache, teacher, x, "cpu", samples=40)
    assert set(worst) == set(TAPS) and max(worst.values()) < 1e-2
    shard = cache.folder / cache.meta["files"]["logits"][0]
    arr = np.load(shard)
    np.save(shard, arr + 1.0)
    resum(cache.folder, shard.name)  # whole files of other outputs (a stale cache): only the teacher can tell
    with pytest.raises(KDistillError, match="differs from the live teacher"):
        verify_cache(TeacherCache(cache.folder), teacher, x, "cpu", samples=40)


def test_training_on_the_disk_cache_matches_the_live_teacher(teacher, x, tmp_path):
    """Same student, within rounding: live teacher every step vs the cache (float32 and float16)."""
    y = torch.full((40,), -1)
    students = {}
    for mode in ("live", "float32", "float16"):
        torch.manual_seed(1)
        student = build_model("mlp", in_features=64, hidden=[16])
        objective = build_objective([{"loss": "kd", "args": {"alpha": 1.0}}])
        stage = StageSpec(name="t", epochs=2, batch_size=8, optimizer={"name": "sgd", "lr": 0.1}, cache_teacher=False,
                          cache=None if mode == "live" else {"dir": str(tmp_path), "dtype": mode})
        train_stage(student, objective, x, y, stage, torch.device("cpu"), teacher, seed=3,
                    hooks=Hooks())
        students[mode] = torch.cat([p.detach().flatten() for p in student.parameters()])
    assert torch.allclose(students["float32"], students["live"], atol=1e-5)
    assert torch.allclose(students["float16"], students["live"], atol=5e-3)
    assert not torch.equal(students["float16"], students["live"])  # the fp16 rounding is real, and small


def test_loss_and_gradients_from_the_half_precision_cache(teacher, x, tmp_path):
    """One batch: the loss and the student's gradients from cached fp16 outputs match the live ones."""
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    index = torch.arange(16)
    torch.manual_seed(0)
    student = build_model("cnn", channels=[4, 8], image_size=8)
    objective = build_objective([{"loss": "kd", "args": {"alpha": 1.0}},
                                 {"loss": "hint", "student": "stages.1", "teacher": "stages.1"}])
    results = []
    for feats in (live(teacher, x[index]), cache.get(TAPS, index)):
        student.zero_grad()
        from kdistill.models.taps import FeatureTaps

        with FeatureTaps(student, TAPS, "student") as taps:
            loss, _ = objective(taps.collect(student(x[index])), feats, torch.full((16,), -1), index)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in student.parameters()])))
    (loss_live, grad_live), (loss_cached, grad_cached) = results
    assert loss_cached == pytest.approx(loss_live, rel=1e-3)
    assert torch.allclose(grad_cached, grad_live, rtol=1e-2, atol=1e-4)


def test_building_shows_one_bar_over_every_shard_and_view(teacher, x, tmp_path, monkeypatch, capsys):
    import io
    import sys

    from kdistill import progress
    from kdistill.train import cache as cache_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(cache_module, "SHARD", 16)  # 40 samples: 3 shards
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress.shown(True):
        build_cache(teacher, TAPS, x, tmp_path / "a", "cpu", {"shift": 1}, views=2, batch_size=8)
    bar = sys.stderr.getvalue()
    assert "teacher outputs (cache):" in bar and "/80 " in bar  # 40 samples x 2 views, one bar
    assert "[cache]" not in capsys.readouterr().out  # on a terminal the bar says it
    # a log file instead of a terminal: no bar, a line a shard
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress.shown(True):
        build_cache(teacher, TAPS, x, tmp_path / "b", "cpu", {"shift": 1}, views=2, batch_size=8)
    assert sys.stderr.getvalue() == ""
    assert capsys.readouterr().out.count("[cache]") == 3


def zero_shard(folder, name):
    arr = np.load(folder / name)
    np.save(folder / name, np.zeros_like(arr))  # the same shape and size: only the bytes differ


def cut_shard(folder, name):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, problem", [(zero_shard, "does not match its checksum"),
                                             (cut_shard, "cut short or overwritten")])
def test_a_damaged_shard_is_refused_on_opening_and_built_again_by_build_cache(teacher, x, tmp_path, damage, problem):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu", dtype="float32")
    want = cache.get(TAPS, torch.arange(8))["logits"]
    name = cache.meta["files"]["logits"][0]
    damage(cache.folder, name)
    with pytest.raises(CacheDamaged) as err:
        TeacherCache(cache.folder)
    assert problem in str(err.value) and name in str(err.value) and "kdistill cache" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=f"{name} .*{problem}.*; building it again"):
        again = build_cache(teacher, TAPS, x, tmp_path, "cpu", dtype="float32")
    assert again.folder == cache.folder and torch.allclose(again.get(TAPS, torch.arange(8))["logits"], want)


def _edit_meta(folder, change):
    path = folder / "meta.json"
    meta = json.loads(path.read_text(encoding="utf8"))
    if change == "not json":
        path.write_text('{"n": 40, "views"', encoding="utf8")
        return
    if change == "a list":
        meta = [meta]
    elif change == "no files":
        del meta["files"]
    elif change == "n as text":
        meta["n"] = "40"
    elif change == "a path outside":
        meta["files"]["logits"] = ["../../elsewhere.npy"]
    elif change == "no checksums":  # written before caches recorded them
        del meta["sums"]
    elif change == "more samples":
        meta["n"] = 41
    path.write_text(json.dumps(meta), encoding="utf8")


@pytest.mark.parametrize("change, problem", [
    ("not json", "cannot be read"), ("a list", "lacks a valid n"), ("no files", "lacks a valid files"),
    ("n as text", "lacks a valid n"), ("a path outside", "lacks a valid files"),
    ("no checksums", "written before caches recorded checksums"), ("more samples", "samples x views")])
def test_a_damaged_or_old_meta_json_is_one_line_and_built_again(teacher, x, tmp_path, change, problem):
    cache = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    _edit_meta(cache.folder, change)
    with pytest.raises(CacheDamaged) as err:
        TeacherCache(cache.folder)
    assert problem in str(err.value) and "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=problem):
        again = build_cache(teacher, TAPS, x, tmp_path, "cpu")
    assert again.get(TAPS, torch.tensor([3]))["logits"].shape == (1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt whole: found as it is the next time, without a warning
        assert build_cache(teacher, TAPS, x, tmp_path, "cpu").folder == cache.folder


def test_each_file_is_checked_once_a_process(teacher, x, tmp_path, monkeypatch):
    build_cache(teacher, TAPS, x, tmp_path / "a", "cpu")
    calls = []
    monkeypatch.setattr(cache_module, "file_sum", lambda path: calls.append(path) or file_sum(path))
    cache = build_cache(teacher, TAPS, x, tmp_path / "b", "cpu")  # its files hashed once, as they are written
    hashed = len(calls)
    assert hashed == 1 + len(TAPS)  # params.npy and one shard a tap
    TeacherCache(cache.folder)
    build_cache(teacher, TAPS, x, tmp_path / "b", "cpu")
    assert len(calls) == hashed
    monkeypatch.setattr(cache_module, "_CHECKED", set())  # another process
    TeacherCache(cache.folder)
    assert len(calls) == 2 * hashed


def test_a_cache_dir_that_cannot_be_written_is_one_line(teacher, x, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("in the way", encoding="utf8")
    with pytest.raises(KDistillError) as err:
        build_cache(teacher, TAPS, x, tmp_path / "file" / "cache", "cpu", field="stages (s): cache.dir")
    assert str(err.value).startswith("stages (s): cache.dir: cannot write the teacher's outputs into ")
    assert "(Not a directory); set cache.dir to a folder you can write" in str(err.value)

    def refused(self, *args, **kwargs):  # a read-only folder (the tests may run as root, who can write anywhere)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(cache_module.Path, "mkdir", refused)
    with pytest.raises(KDistillError, match=r"cache.dir: cannot write .*\(Permission denied\)"):
        build_cache(teacher, TAPS, x, tmp_path / "ro", "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
