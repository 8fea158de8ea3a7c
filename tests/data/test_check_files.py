"""Unreadable image files, all at once (kdistill/data/check_files.py): every file decoded once;
``data.images.skip_unreadable`` leaves the unreadable ones out of a run in one warning line and
writes their list."""

import json

from kdistill.data.check_files import drop_unreadable
from kdistill.data.image_folder import read_images
from kdistill.recipe import DataSpec

from fixtures import photo_recipe as recipe, write_photos as photos


def test_drop_unreadable_keeps_the_rest_in_order(tmp_path):
    root = photos(tmp_path / "pics")
    source = read_images(root, DataSpec(source="image_folder", path=str(root), images={"size": [8, 8]}), "data.path")
    rest, skipped = drop_unreadable(source, workers=2)
    assert len(rest) == 12 and len(skipped) == 3 and all("broken" in name for name, _ in skipped)
    assert rest.fetch(rest.y.new_tensor(range(12))).shape == (12, 3, 8, 8)


def test_a_run_skips_unreadable_files_when_told(tmp_path, monkeypatch, capsys):
    from kdistill import run

    monkeypatch.setattr("kdistill.runner.write_report", lambda *a, **k: None)
    root = photos(tmp_path / "pics")
    result = run(recipe(root, "skip", skip_unreadable=True), runs_dir=tmp_path / "runs", progress=False)
    said = capsys.readouterr().err  # information lines go to stderr
    warned = [line for line in said.splitlines() if "unreadable" in line]
    assert len(warned) == 1 and "skipped 3 unreadable image files of 15" in warned[0]
    assert "skipped_files.txt" in warned[0]
    listed = (result.run_dir / "skipped_files.txt").read_text(encoding="utf8").splitlines()
    assert len(listed) == 3 and all("broken" in line and "\t" in line for line in listed)
    assert json.loads((result.run_dir / "summary.json").read_text(encoding="utf8"))["data"]["skipped_files"] == 3


def test_an_unreadable_file_met_by_a_worker_is_one_line_naming_check_data(tmp_path):
    import pytest
    import torch

    from kdistill.data.loader import BatchLoader
    from kdistill.data.samples import Inputs
    from kdistill.errors import KDistillError

    root = photos(tmp_path / "pics", good=2, bad=1)
    source = read_images(root, DataSpec(source="image_folder", path=str(root), images={"size": [8, 8]}), "data.path")
    loader = BatchLoader(Inputs(source), source.y, workers=1)
    with pytest.raises(KDistillError) as caught:
        list(loader.epoch([torch.arange(len(source))]))
    loader.close()
    assert str(caught.value).startswith("data: ") and "broken0.jpg: cannot decode" in str(caught.value)
    assert "kdistill check-data" in str(caught.value) and "\n" not in str(caught.value)
