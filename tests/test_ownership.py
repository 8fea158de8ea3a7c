"""Every path kdistill writes is its own: a finished run never replaces a folder that appeared
at its name, two runs of one name never share a folder (an OS lock, dropped when a process
dies), nothing is written through a link, no user file is overwritten without --overwrite, and
a full disk keeps the run for --resume."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.evaluate.report import check_report_inputs, compare_runs, write_report
from kdistill.paths import no_links, open_own, write_own
from kdistill.rebuild import export_run
from kdistill.paths import check_run_name
from kdistill.rundir import MARKER, unwritable

import kdistill.runner as run_module
import kdistill.train.fit as fit_module

fcntl = pytest.importorskip("fcntl")

RECIPE = {"name": "r", "seed": 1, "latency": False, "data": {"source": "digits", "labelled": 100},
          "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
          "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
          "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}


def _one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def _no_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("--resume trained again")

    monkeypatch.setattr(fit_module, "train_stage", no_training)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run(RECIPE, runs_dir=tmp_path_factory.mktemp("runs"), progress=False).run_dir


@pytest.fixture
def disk_full_run(tmp_path, monkeypatch):
    """A run whose report met a full disk: its one-line error and its kept ``r.incomplete``."""
    def full(run_dir, summary=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "report.md"))

    monkeypatch.setattr(run_module, "write_report", full)
    with pytest.raises(KDistillError) as err:
        run(RECIPE, runs_dir=tmp_path, progress=False)
    monkeypatch.undo()
    return _one_line(err), tmp_path / "r.incomplete"


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_keeps_the_run_for_resume(disk_full_run, monkeypatch):
    message, partial = disk_full_run
    assert "could not write" in message and "report.md" in message and "No space left on device" in message
    assert f"kdistill run --resume {partial}" in message
    assert any((partial / "checkpoints").glob("ckpt-*.pt")) and not (partial.parent / "r").exists()
    _no_training(monkeypatch)
    done = run(None, resume=partial, progress=False).run_dir
    assert done == partial.parent / "r" and (done / "report.md").is_file() and not partial.exists()


def test_a_full_disk_at_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    import torch

    def full(state, f):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(KDistillError) as err:
        run(RECIPE, runs_dir=tmp_path, progress=False)
    message = _one_line(err)
    assert message.startswith(f"could not write {tmp_path / 'r.incomplete' / 'checkpoints'}")
    assert "no checkpoint had been written" in message and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="Linux's always-full device")
def test_a_full_disk_error_names_the_file_it_could_not_write():
    with pytest.raises(OSError) as err:
        write_own("/dev/full", "x" * 100_000)
    assert err.value.errno == errno.ENOSPC and err.value.filename == "/dev/full"
    message = str(unwritable(err.value))
    assert message.startswith("could not write /dev/full (No space left on device); free some space")


def test_another_os_error_is_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    def broken(run_dir, summary=None):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(run_module, "write_report", broken)
    with pytest.raises(OSError, match="Input/output"):
        run(RECIPE, runs_dir=tmp_path, progress=False)


# ---------------------------------------------------------------- publishing


def _appears_during_the_run(monkeypatch, final, marker=False):
    real = run_module.write_report

    def and_a_folder_appears(run_dir, summary=None):
        final.mkdir()
        (final / "notes.txt").write_text("my own work")
        if marker:
            (final / MARKER).write_text("{}")
        return real(run_dir, summary)

    monkeypatch.setattr(run_module, "write_report", and_a_folder_appears)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_appears_at_the_name_is_never_replaced(tmp_path, monkeypatch, overwrite):
    final, partial = tmp_path / "r", tmp_path / "r.incomplete"
    _appears_during_the_run(monkeypatch, final)
    with pytest.raises(KDistillError) as err:
        run(RECIPE, runs_dir=tmp_path, overwrite=overwrite, progress=False)
    monkeypatch.undo()
    message = _one_line(err)
    assert ("was not written by kdistill" if overwrite else "appeared while the run was going") in message
    assert f"kdistill run --resume {partial}" in message
    assert (final / "notes.txt").read_text() == "my own work"
    assert (partial / "summary.json").is_file() and (partial / "report.md").is_file()
    with pytest.raises(KDistillError, match="move it away"):
        run(None, resume=partial, progress=False)
    shutil.move(final, tmp_path / "mine")  # the fix the message gives
    _no_training(monkeypatch)
    assert run(None, resume=partial, progress=False).run_dir == final
    assert (final / "summary.json").is_file() and not (final / "checkpoints").exists() and not partial.exists()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own work"


def test_overwrite_replaces_a_kdistill_run_that_appeared(tmp_path, monkeypatch):
    final = tmp_path / "r"
    _appears_during_the_run(monkeypatch, final, marker=True)
    assert run(RECIPE, runs_dir=tmp_path, overwrite=True, progress=False).run_dir == final
    assert not (final / "notes.txt").exists() and (final / "summary.json").is_file()


def test_without_checkpoints_the_refusal_says_to_rename_by_hand(tmp_path, monkeypatch):
    final, partial = tmp_path / "r", tmp_path / "r.incomplete"
    _appears_during_the_run(monkeypatch, final)
    with pytest.raises(KDistillError) as err:
        run({**RECIPE, "checkpoint": {"enabled": False}}, runs_dir=tmp_path, progress=False)
    assert f"rename {partial} to {final}" in _one_line(err) and (partial / "summary.json").is_file()


# ---------------------------------------------------------------- one run per name


def _hold(folder):
    """Another open file description locking the run's marker, as a second process would."""
    fd = os.open(folder / MARKER, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_run_in_use_is_refused_to_a_second_run_and_resume(disk_full_run, monkeypatch):
    _, partial = disk_full_run
    record = json.loads((partial / MARKER).read_text())
    assert record["pid"] == os.getpid() and record["name"] == "r"
    before = {p: p.read_bytes() for p in partial.rglob("*") if p.is_file()}
    fd = _hold(partial)
    try:
        for attempt in (lambda: run(RECIPE, runs_dir=partial.parent, overwrite=True, progress=False),
                        lambda: run(None, resume=partial, progress=False)):
            with pytest.raises(KDistillError) as err:
                attempt()
            assert f"{partial} is in use by another kdistill run (pid {os.getpid()}" in _one_line(err)
        assert {p: p.read_bytes() for p in partial.rglob("*") if p.is_file()} == before
    finally:
        os.close(fd)
    _no_training(monkeypatch)
    assert run(None, resume=partial, progress=False).run_dir == partial.parent / "r"


def test_a_killed_holder_leaves_no_lock_behind(disk_full_run, monkeypatch):
    _, partial = disk_full_run
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               f"fd = os.open({str(partial / MARKER)!r}, os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(KDistillError, match="is in use by another kdistill run"):
            run(None, resume=partial, progress=False)
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
    _no_training(monkeypatch)
    assert run(None, resume=partial, progress=False).run_dir == partial.parent / "r"
    assert [p.name for p in partial.parent.iterdir()] == ["r"]  # no lock file left anywhere


def test_a_process_forked_by_a_run_does_not_keep_its_lock(tmp_path):
    """DataLoader workers are forked: they share the lock's open file, and would hold the name
    of a SIGKILLed run until they noticed; they close it as they start."""
    from kdistill.rundir import check_free

    script = ("import os, sys, time\nfrom kdistill.rundir import RunDir\n"
              f"run = RunDir({str(tmp_path)!r}, 'r', False)\nchild = os.fork()\n"
              "if child == 0:\n    time.sleep(60)\n    os._exit(0)\n"
              "print(child, flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(KDistillError, match="is in use by another kdistill run"):
            check_free(tmp_path / "r.incomplete")
        holder.kill()
        holder.wait()
        check_free(tmp_path / "r.incomplete")  # the forked child lives on, the lock does not
    finally:
        holder.kill()
        os.kill(child, 9)


def test_a_finished_run_leaves_its_name_unlocked(finished):
    fd = _hold(finished)  # would raise BlockingIOError if the run still held it
    os.close(fd)


# ---------------------------------------------------------------- links


def test_resume_never_writes_through_a_link(disk_full_run, tmp_path):
    _, partial = disk_full_run
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (partial / "metrics.jsonl").unlink()
    (partial / "metrics.jsonl").symlink_to(outside)
    with pytest.raises(KDistillError) as err:
        run(None, resume=partial, progress=False)
    assert f"{partial / 'metrics.jsonl'} is a symbolic link" in _one_line(err)
    assert outside.read_text() == "precious"


@pytest.mark.parametrize("name", ["report.md", "report.html", "plots", "plots/tradeoff.png"])
def test_report_never_writes_through_a_link(finished, tmp_path, name):
    copy = shutil.copytree(finished, tmp_path / "run")
    outside = tmp_path / "outside"
    if name == "plots":
        outside.mkdir()
        shutil.rmtree(copy / name)
    else:
        outside.write_text("precious")
        (copy / name).unlink()
    (copy / name).symlink_to(outside)
    for report in (lambda: check_report_inputs([copy], None), lambda: write_report(copy)):
        with pytest.raises(KDistillError) as err:
            report()
        assert f"{copy / name} is a symbolic link" in _one_line(err)
    assert (list(outside.iterdir()) == [] if name == "plots" else outside.read_text() == "precious")


def test_report_and_export_refuse_a_folder_kdistill_did_not_write(finished, tmp_path):
    copy = shutil.copytree(finished, tmp_path / "run")
    (copy / MARKER).unlink()
    (copy / "report.md").unlink()
    with pytest.raises(KDistillError, match="was not written by kdistill"):
        check_report_inputs([copy], None)
    with pytest.raises(KDistillError, match="was not written by kdistill"):
        write_report(copy)
    with pytest.raises(KDistillError, match="export: .* was not written by kdistill"):
        export_run(copy)  # into <run>/export
    assert not (copy / "report.md").exists() and not (copy / "export").exists()


def test_open_own_refuses_links_of_both_kinds(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("precious")
    (tmp_path / "run" / "sub").mkdir(parents=True)
    (tmp_path / "run" / "soft").symlink_to(outside)
    os.link(outside, tmp_path / "run" / "hard")
    (tmp_path / "run" / "linked").symlink_to(tmp_path / "run" / "sub")
    for name, kind in (("soft", "symbolic link"), ("hard", "hard link")):
        for mode in ("w", "a", "wb"):
            with pytest.raises(KDistillError, match=kind):
                open_own(tmp_path / "run" / name, mode, encoding="utf8")
    with pytest.raises(KDistillError, match="linked is a symbolic link"):
        write_own(tmp_path / "run" / "linked" / "x.txt", "x", root=tmp_path / "run")
    assert outside.read_text() == "precious" and not (tmp_path / "run" / "sub" / "x.txt").exists()
    assert no_links(tmp_path / "run" / "sub" / "x.txt", tmp_path / "run") == tmp_path / "run" / "sub" / "x.txt"
    write_own(tmp_path / "run" / "sub" / "x.txt", "mine", root=tmp_path / "run")
    assert (tmp_path / "run" / "sub" / "x.txt").read_text(encoding="utf8") == "mine"


# ---------------------------------------------------------------- files in the user's folders


def test_export_checks_every_file_it_writes(finished, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.json").write_text("my notes")
    with pytest.raises(KDistillError) as err:
        export_run(finished, "safetensors", out)
    assert f"{out / 'student.json'} exists" in _one_line(err) and "--overwrite" in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["student.json"]
    (out / "student.json").unlink()
    (out / "student.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(KDistillError, match="is a symbolic link"):
        export_run(finished, "safetensors", out, overwrite=True)
    (out / "student.json").unlink()
    (out / "student.json").write_text("my notes")
    export_run(finished, "safetensors", out, overwrite=True)
    assert json.loads((out / "student.json").read_text())["format"] == "safetensors"


def test_a_comparison_is_not_written_over_without_overwrite(finished, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "report.html").write_text("my page")
    with pytest.raises(KDistillError) as err:
        check_report_inputs([finished, finished], out)
    assert f"{out / 'report.html'} exists" in _one_line(err) and "--overwrite" in str(err.value)
    with pytest.raises(KDistillError, match="exists"):
        compare_runs([finished, finished], out)
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    check_report_inputs([finished, finished], out, overwrite=True)
    compare_runs([finished, finished], out, overwrite=True)
    assert "my page" not in (out / "report.html").read_text()


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "bell\x07", "del\x7f", "c1\x85", "\udcff", "x\ud800y"])
def test_a_name_with_control_characters_or_bytes_not_utf8_is_refused(name):
    with pytest.raises(KDistillError, match="control character or bytes that are not UTF-8") as err:
        check_run_name(name)
    _one_line(err)


def test_a_printable_name_in_any_script_is_a_name():
    assert check_run_name("résumé-ラン") == "résumé-ラン"


def test_the_cli_refuses_a_name_from_bytes_not_utf8(tmp_path):
    (tmp_path / "r.yaml").write_text(json.dumps(RECIPE))  # JSON is YAML
    done = subprocess.run([os.fsencode(sys.executable), b"-m", b"kdistill.cli", b"run", b"r.yaml", b"name=\xff"],
                          capture_output=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr
    assert b"error: recipe: name: '\\udcff' holds a control character or bytes that are not UTF-8" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]  # refused before any work
