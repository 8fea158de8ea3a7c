"""Run directories: nothing outside the run is touched, nothing is overwritten unless kdistill
wrote it, an unfinished run's checkpoints are never dropped silently, and a run killed after
training is finished by --resume without training again."""

import os
import stat
import sys

import pytest

from kdistill import evaluate_run, run
from kdistill.errors import KDistillError
from kdistill.rundir import MARKER

import kdistill.runner as run_module  # noqa: E402
import kdistill.train.fit as fit_module  # noqa: E402
from kdistill.families import Classifier  # noqa: E402

RECIPE = {"name": "r", "seed": 1, "latency": False, "data": {"source": "digits", "labelled": 100},
          "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
          "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
          "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1},
                     {"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}


def tree(folder):
    """Every file under ``folder`` with its bytes, to show nothing changed."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its directory's weight files."""
    return run(RECIPE, runs_dir=tmp_path_factory.mktemp("runs"), progress=False).run_dir


@pytest.mark.parametrize("name", ["..", "", ".", "../x", "/tmp/x", "a/b", "runs/..", "x.incomplete"])
def test_a_name_that_is_a_path_is_refused(tmp_path, name):
    runs = tmp_path / "here" / "runs"
    (runs / "other-run").mkdir(parents=True)
    (runs / "other-run" / MARKER).write_text("{}")
    before = tree(tmp_path)
    with pytest.raises(KDistillError, match="is not a run name|marks unfinished runs"):
        run({**RECIPE, "name": name}, runs_dir=runs, overwrite=True, progress=False)
    assert tree(tmp_path) == before and (runs / "other-run").is_dir()


def test_overwrite_removes_only_what_kdistill_wrote(tmp_path, reference):
    mine = tmp_path / "r"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own work")
    with pytest.raises(KDistillError, match="was not written by kdistill"):
        run(RECIPE, runs_dir=tmp_path, overwrite=True, progress=False)
    assert (mine / "notes.txt").read_text() == "my own work"
    (mine / "notes.txt").unlink()
    mine.rmdir()
    first = run(RECIPE, runs_dir=tmp_path, progress=False).run_dir
    (first / "stale.txt").write_text("from the run before")
    again = run(RECIPE, runs_dir=tmp_path, overwrite=True, progress=False).run_dir
    assert again == first and not (again / "stale.txt").exists() and (again / MARKER).is_file()


def test_an_unfinished_run_is_not_dropped_without_resume_or_overwrite(tmp_path, monkeypatch):
    crash = _crash_at(monkeypatch, "evaluation")
    with pytest.raises(crash):
        run(RECIPE, runs_dir=tmp_path, progress=False)
    monkeypatch.undo()
    partial = tmp_path / "r.incomplete"
    before = tree(partial)
    assert any(p.parts[0] == "checkpoints" for p in before)
    with pytest.raises(KDistillError) as err:
        run(RECIPE, runs_dir=tmp_path, progress=False)
    assert f"kdistill run --resume {partial}" in str(err.value) and "--overwrite" in str(err.value)
    assert tree(partial) == before
    assert run(RECIPE, runs_dir=tmp_path, overwrite=True, progress=False).run_dir == tmp_path / "r"
    assert not partial.exists()


def test_a_runs_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(KDistillError, match="is a file, not a folder"):
        run(RECIPE, runs_dir=tmp_path / "runs", progress=False)
    with pytest.raises(KDistillError, match="not a writable folder"):
        run(RECIPE, runs_dir=tmp_path / "runs" / "below", progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_runs_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(KDistillError, match="not a writable folder"):
        run(RECIPE, runs_dir=locked / "runs", progress=False)


def _crash_at(monkeypatch, phase):
    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash(phase)

    target = {"evaluation": (Classifier, "final_metrics"), "export": (run_module, "save_weights"),
              "report": (run_module, "write_report"), "rename": (sys.modules["kdistill.rundir"], "publish")}[phase]
    monkeypatch.setattr(*target, crash)
    return Crash


@pytest.mark.parametrize("phase", ["evaluation", "export", "report", "rename"])
def test_a_crash_after_training_is_finished_by_resume_without_training(tmp_path, monkeypatch, reference, phase):
    crash = _crash_at(monkeypatch, phase)
    with pytest.raises(crash):
        run(RECIPE, runs_dir=tmp_path, progress=False)
    monkeypatch.undo()
    partial = tmp_path / "r.incomplete"
    assert not (tmp_path / "r").exists() and any((partial / "checkpoints").glob("ckpt-*.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("--resume trained again")

    monkeypatch.setattr(fit_module, "train_stage", no_training)
    done = run(None, resume=partial, progress=False).run_dir
    assert done == tmp_path / "r" and not partial.exists() and not (done / "checkpoints").exists()
    for name in ("student.safetensors", "teacher.safetensors", "predictions.safetensors"):
        assert (done / name).read_bytes() == (reference / name).read_bytes(), name
    assert (done / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    assert (done / "report.md").is_file()


def test_weight_files_are_byte_reproducible_and_readable(tmp_path, reference):
    again = run(RECIPE, runs_dir=tmp_path, progress=False).run_dir
    for name in ("student.safetensors", "teacher.safetensors", "predictions.safetensors"):
        assert (again / name).read_bytes() == (reference / name).read_bytes(), name
        mode = stat.S_IMODE((again / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), oct(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_quiet_python_runs_print_nothing(tmp_path, capsys):
    run(RECIPE, runs_dir=tmp_path, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch" not in captured.err


def test_a_stop_without_a_checkpoint_leaves_nothing(tmp_path):
    recipe = {**RECIPE, "stages": [{"name": "s", "train": "teacher", "data": "full", "epochs": 1,
                                    "optimizer": {"name": "sgd", "lr": 1e30}, "grad_clip": None}]}
    with pytest.raises(KDistillError, match=r"became .*no checkpoint had been written, so .* was removed"):
        run(recipe, runs_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def _write_module(folder, marker):
    (folder / "mymodels.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "from kdistill.models.zoo import MLP\n"
        "def small(**kw):\n    return MLP(**kw)\n")


def test_eval_and_export_import_no_code_unless_trusted(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    _write_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = {**RECIPE, "student": {"model": "mymodels:small", "args": {"in_features": 64, "hidden": [8]}}}
    done = run(recipe, runs_dir=tmp_path / "runs", progress=False).run_dir
    marker.unlink()
    sys.modules.pop("mymodels", None)
    from kdistill.rebuild import export_run

    for action in (lambda trust: evaluate_run(done, latency=False, trust_code=trust),
                   lambda trust: export_run(done, "safetensors", tmp_path / "out", trust_code=trust)):
        with pytest.raises(KDistillError, match="--trust-code"):
            action(False)
        assert not marker.exists()  # refused before anything was imported
        action(True)
        assert marker.exists()
        marker.unlink()
        sys.modules.pop("mymodels", None)


def test_a_corrupt_teacher_file_does_not_block_a_student_export(tmp_path, reference):
    import shutil

    from kdistill.rebuild import export_run

    copy = tmp_path / "r"
    shutil.copytree(reference, copy)
    (copy / "teacher.safetensors").write_bytes(b"\x00" * 40)
    meta = export_run(copy, "safetensors", tmp_path / "out")
    assert meta["format"] == "safetensors" and (tmp_path / "out" / "student.safetensors").is_file()
