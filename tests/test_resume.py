"""Runs that die resume where they stopped: bit for bit on CPU, past a damaged checkpoint."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdistill import run
from kdistill.train.checkpoint import load_latest
from kdistill.errors import KDistillError

# two stages (the second starts from the first's end, with an L2 pull to it), dropout, a
# memory-bank loss (CRD) and augmentation: every kind of state a checkpoint must carry
RECIPE = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "resumable.yaml").read_text())


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "kdistill.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run(RECIPE, runs_dir=runs, progress=False)
    assert not (result.run_dir / "checkpoints").exists()  # removed once the run is complete
    return load_file(result.run_dir / "student.safetensors")


def _kill_after_checkpoints(recipe_path, runs, count):
    proc = cli("run", recipe_path, "--runs-dir", runs, "-q")
    folder = runs / "resumable.incomplete" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline:
        names = sorted(folder.glob("ckpt-*.pt")) if folder.exists() else []
        if len(names) >= 1 and int(names[-1].name.split("-b")[1][:7]) + 100 * int(names[-1].name[6:8]) >= count:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return folder


@pytest.mark.parametrize("damage, workers", [(False, 0), (True, 0), (False, 2)])
def test_killed_run_resumes_bit_for_bit(tmp_path, uninterrupted, damage, workers):
    """Killed mid-stage, finished by --resume: the uninterrupted student, bit for bit (the
    uninterrupted run fetches in-process; this one with DataLoader workers where asked)."""
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({**RECIPE, "data": {**RECIPE["data"], "loader": {"workers": workers}}}))
    runs = tmp_path / "runs"
    folder = _kill_after_checkpoints(recipe_path, runs, count=int(torch.randint(101, 106, ()).item()))
    assert not (runs / "resumable").exists()  # a killed run is never passed off as complete
    names = sorted(folder.glob("ckpt-*.pt"))
    assert names, "the run was killed before its first checkpoint"
    if damage:  # the newest checkpoint cut short: the one before it is used, with a warning
        if len(names) < 2:
            pytest.skip("only one checkpoint was written before the kill")
        names[-1].write_bytes(names[-1].read_bytes()[:1000])
        with pytest.warns(UserWarning, match="cannot be read"):
            state, path = load_latest(folder)
        assert path == names[-2]
    done = cli("run", "--resume", runs / "resumable.incomplete", "--runs-dir", runs, "-q")
    assert done.wait(timeout=300) == 0, done.stderr.read()
    resumed = load_file(runs / "resumable" / "student.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    lines = (runs / "resumable" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 + 3 + 4  # one record an epoch: none lost, none repeated


def test_resume_needs_an_unfinished_run(tmp_path):
    with pytest.raises(KDistillError, match="not an unfinished run directory"):
        run(None, resume=tmp_path / "nothing")
    (tmp_path / "x.incomplete").mkdir()
    (tmp_path / "x.incomplete" / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    with pytest.raises(KDistillError, match="no readable checkpoint"):
        run(None, resume=tmp_path / "x")


def test_nan_loss_stops_with_the_term_and_step(tmp_path):
    recipe = {**RECIPE, "stages": [{"name": "s", "train": "teacher", "data": "full", "epochs": 1,
                                    "optimizer": {"name": "sgd", "lr": 1e30}, "grad_clip": None}]}
    with pytest.raises(KDistillError, match=r"loss term 'ce' became (nan|inf).* at epoch 1, step \d+"):
        run(recipe, runs_dir=tmp_path, progress=False)


def test_sigterm_writes_a_checkpoint_and_stops_cleanly(tmp_path, uninterrupted):
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump(RECIPE))
    runs = tmp_path / "runs"
    proc = cli("run", recipe_path, "--runs-dir", runs, "-q")
    folder = runs / "resumable.incomplete" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (folder.exists() and any(folder.glob("ckpt-s01-*.pt"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 2
    stderr = proc.stderr.read()
    assert "stopped by a signal" in stderr and "Traceback" not in stderr
    assert f"kdistill run --resume {runs / 'resumable.incomplete'}" in stderr  # the path, not a placeholder
    done = cli("run", "--resume", runs / "resumable.incomplete", "--runs-dir", runs, "-q")
    assert done.wait(timeout=300) == 0, done.stderr.read()
    resumed = load_file(runs / "resumable" / "student.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_run_stopped_before_a_stage_with_lazy_modules_resumes(tmp_path, uninterrupted, monkeypatch):
    """CRD's heads are lazy until its stage runs: a checkpoint of an earlier stage must still load
    (weights_only refuses unmaterialised parameters) and the resumed run end as the uninterrupted one."""
    module = sys.modules["kdistill.train.fit"]
    real, calls = module.train_stage, []

    def crash_at_the_second_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between the stages would
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "train_stage", crash_at_the_second_stage)
    with pytest.raises(KeyboardInterrupt):
        run(RECIPE, runs_dir=tmp_path, progress=False)
    monkeypatch.undo()
    state, path = load_latest(tmp_path / "resumable.incomplete" / "checkpoints")
    assert path.name.startswith("ckpt-s00-")
    resumed = load_file(run(None, resume=tmp_path / "resumable.incomplete", progress=False).run_dir
                        / "student.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_checkpoint_of_another_version_is_refused_in_one_line(tmp_path):
    from kdistill.train.checkpoint import checkpoint_name, save_checkpoint
    from kdistill.train.state import V2_KEYS

    partial = tmp_path / "resumable.incomplete"
    partial.mkdir()
    (partial / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    old = {key: 0 for key in V2_KEYS - {"features"}} | {"version": 1, "pca": None}
    save_checkpoint(partial / "checkpoints", checkpoint_name(1, 0, 0), old)
    with pytest.raises(KDistillError, match=r"another version of kdistill \(checkpoint version 1"):
        run(None, resume=partial, progress=False)
    assert (partial / "checkpoints").is_dir()  # refused, nothing removed


def test_a_killed_run_over_photos_decoded_at_random_by_workers_resumes_bit_for_bit(tmp_path):
    """Random crops and flips drawn by (seed, epoch, sample) in two workers: killed mid-stage and
    resumed, the student of an uninterrupted run that decoded in-process."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for c in range(3):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for i in range(20):
            size = (12 + i % 5, 10 + i % 3)
            pixels = (torch.rand(size[1], size[0], 3, generator=rng) * 80 + 60 * c).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / "photos" / f"c{c}" / f"{i}.jpg")
    recipe = {"name": "resumable", "seed": 1, "threads": 1, "latency": False, "checkpoint": {"every": 2},
              "data": {"source": "image_folder", "path": str(tmp_path / "photos"), "labelled": 12,
                       "files": {"test": 9}, "images": {"size": 10, "crop": 8, "random_crop": True, "flip": True}},
              "student": {"model": "cnn", "args": {"channels": [4], "image_size": 8}},
              "stages": [{"name": "s", "data": "labelled+transfer", "epochs": 6, "batch_size": 8,
                          "loss": [{"loss": "ce"}]}]}
    whole = run(recipe, runs_dir=tmp_path / "whole", progress=False)
    expected = load_file(whole.run_dir / "student.safetensors")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({**recipe, "data": {**recipe["data"], "loader": {"workers": 2}}}))
    runs = tmp_path / "runs"
    folder = _kill_after_checkpoints(recipe_path, runs, count=int(torch.randint(3, 12, ()).item()))
    assert sorted(folder.glob("ckpt-*.pt")), "the run was killed before its first checkpoint"
    done = cli("run", "--resume", runs / "resumable.incomplete", "--runs-dir", runs, "-q")
    assert done.wait(timeout=300) == 0, done.stderr.read()
    resumed = load_file(runs / "resumable" / "student.safetensors")
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_a_run_started_before_the_decay_split_resumes_as_it_started(tmp_path, monkeypatch):
    """A run directory whose recipe.yaml predates ``decay_bias_and_norm`` decayed every parameter
    (one optimiser group): --resume keeps that, and ends where the uninterrupted run ends."""
    import kdistill.train.loop as loop_module

    old = {**RECIPE, "name": "old", "checkpoint": {"every": 3}}
    old["stages"] = [{**s, "epochs": 1, "optimizer": {**s.get("optimizer", {}), "decay_bias_and_norm": True}}
                     for s in RECIPE["stages"]]
    whole = load_file(run(old, runs_dir=tmp_path / "whole", progress=False).run_dir / "student.safetensors")
    real_step, calls = loop_module.step, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # killed between checkpoints
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        run(old, runs_dir=tmp_path / "runs", progress=False)
    monkeypatch.undo()
    partial = tmp_path / "runs" / "old.incomplete"
    written = partial / "recipe.yaml"
    assert "decay_bias_and_norm: true" in written.read_text()
    written.write_text(written.read_text().replace("    decay_bias_and_norm: true\n", ""))  # as written then
    resumed = run(None, resume=partial, progress=False)
    student = load_file(resumed.run_dir / "student.safetensors")
    assert all(torch.equal(student[k], whole[k]) for k in whole)


TINY = {"name": "tiny", "latency": False, "checkpoint": {"every": 5}, "data": {"source": "digits", "labelled": 100},
        "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
        "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
        "stages": [{"name": "distil", "data": "transfer", "epochs": 3, "loss": [{"loss": "kd"}]}]}


def test_a_recipe_edited_before_resume_is_refused_naming_the_fields(tmp_path):
    from fixtures import interrupted_run

    partial = interrupted_run(TINY, tmp_path)
    written = partial / "recipe.yaml"
    original = written.read_text(encoding="utf8")
    assert "epochs: 3" in original
    written.write_text(original.replace("epochs: 3", "epochs: 2"), encoding="utf8")
    with pytest.raises(KDistillError, match=r"recipe.yaml was edited since the run started \(stages.0.epochs "
                                            r"3 -> 2\); restore it, or start the run again \(--overwrite\)"):
        run(None, resume=partial, progress=False)
    written.write_text(original, encoding="utf8")  # restored: resumed
    done = run(None, resume=partial, progress=False)
    assert [r["epoch"] for r in map(json.loads, (done.run_dir / "metrics.jsonl").read_text().splitlines())
            if "epoch" in r] == [1, 2, 3]


def test_a_checkpoint_that_recorded_no_recipe_resumes_as_before(tmp_path):
    from fixtures import interrupted_run
    from kdistill.train.checkpoint import save_checkpoint

    partial = interrupted_run(TINY, tmp_path)
    state, path = load_latest(partial / "checkpoints")
    del state["recipe"]  # written before checkpoints recorded it
    save_checkpoint(path.parent, path.name, state)
    written = partial / "recipe.yaml"
    written.write_text(written.read_text(encoding="utf8").replace("epochs: 3", "epochs: 2"), encoding="utf8")
    assert run(None, resume=partial, progress=False).run_dir.name == "tiny"


def test_a_checkpoint_written_before_the_registry_of_stateful_objects_resumes_the_same(tmp_path):
    """Version 2 held every part as a key of its own (no "state"): read in this layout, it resumes
    to the student that the same checkpoint in this version's layout resumes to."""
    import shutil

    from fixtures import interrupted_run
    from kdistill.train.checkpoint import save_checkpoint

    partial = interrupted_run(TINY, tmp_path / "a")
    old = tmp_path / "b" / partial.name
    shutil.copytree(partial, old)
    checkpoint, path = load_latest(old / "checkpoints")
    parts = checkpoint["state"]
    assert "loop" in parts  # stopped inside a stage: its loop saved too
    v2 = {"version": 2, "recipe": checkpoint["recipe"], "metrics_lines": checkpoint["metrics_lines"],
          **{k: v for k, v in parts["fit"].items()}, "loop": parts["loop"],
          **{k: parts[k] for k in ("models", "objectives", "features")}}
    save_checkpoint(path.parent, path.name, v2)
    new = load_file(run(None, resume=partial, progress=False).run_dir / "student.safetensors")
    resumed_v2 = load_file(run(None, resume=old, progress=False).run_dir / "student.safetensors")
    assert new.keys() == resumed_v2.keys() and all(torch.equal(new[k], resumed_v2[k]) for k in new)
