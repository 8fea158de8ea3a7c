"""``kdistill cache`` (kdistill/precompute.py): the teacher outputs a recipe's stages will read, built
ahead of the run into the disk caches the run then finds. The cache itself: tests/train/test_cache.py."""

from pathlib import Path

import pytest

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.precompute import cache_recipe


def test_cache_command_builds_what_the_run_then_reads(tmp_path):
    spec = {"model": "cnn", "args": {"channels": [8], "image_size": 8}}
    first = run({"name": "t", "data": {"source": "digits", "labelled": 0}, "latency": False, "teacher": spec,
                 "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1}]},
                runs_dir=tmp_path, progress=False)
    recipe = {"name": "s", "data": {"source": "digits", "labelled": 50}, "latency": False,
              "teacher": {**spec, "weights": str(first.run_dir / "teacher.safetensors")},
              "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "augment": {"shift": 1, "flip": True},
                          "cache": {"dir": str(tmp_path / "cache"), "views": 2},
                          "loss": [{"loss": "kd"}, {"loss": "hint", "student": "stages.0", "teacher": "head.0"}]}]}
    with pytest.raises(KDistillError, match="no stage of the recipe has a 'cache'"):
        cache_recipe({**recipe, "stages": [{**recipe["stages"][0], "cache": None}]}, progress=False)
    [entry] = cache_recipe(recipe, verify=True, progress=False)
    assert entry["views"] == 2 and set(entry["taps"]) == {"logits", "head.0"}
    assert max(entry["max_abs_diff"].values()) < 1e-2
    run(recipe, runs_dir=tmp_path, progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(entry["folder"]).name]  # reused, not rebuilt


def test_a_damaged_cache_is_built_again_by_the_run_and_by_cache_verify(tmp_path):
    """A shard zeroed in place (its shape kept) is found by its checksum, not read as teacher
    outputs: the run and ``kdistill cache --verify`` say so and build it again."""
    import json

    import numpy as np

    recipe = {"name": "z", "latency": False, "data": {"source": "digits", "labelled": 100},
              "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
              "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "cache": {"dir": str(tmp_path / "c")},
                          "loss": [{"loss": "kd"}]}]}
    [entry] = cache_recipe(recipe, progress=False)
    folder = Path(entry["folder"])
    shard = folder / json.loads((folder / "meta.json").read_text(encoding="utf8"))["files"]["logits"][0]
    np.save(shard, np.zeros_like(np.load(shard)))
    with pytest.warns(UserWarning, match=rf"cache: {shard.name} in .* does not match its checksum .*building it again"):
        run(recipe, runs_dir=tmp_path / "runs", progress=False)
    assert np.abs(np.load(shard)).max() > 0  # the teacher's outputs again
    shard.write_bytes(shard.read_bytes()[:100])  # cut short: no traceback (mmap length), built again
    with pytest.warns(UserWarning, match="cut short or overwritten"):
        [again] = cache_recipe(recipe, verify=True, progress=False)
    assert again["folder"] == entry["folder"] and max(again["max_abs_diff"].values()) < 1e-2
