"""``kdistill check-data`` (kdistill/data/check_data.py): every unreadable file of a recipe's data
listed at once, with its reason, then one error line (exit 2)."""

import sys

import pytest
import yaml

from kdistill.data.check_data import check_recipe_data
from kdistill.recipe import load_recipe
from kdistill.errors import KDistillError

from fixtures import photo_recipe as recipe, write_photos as photos


def test_check_data_lists_every_unreadable_file_at_once(tmp_path, monkeypatch, capsys):
    import kdistill.cli as cli

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(photos(tmp_path / "pics"))))
    monkeypatch.setattr(sys, "argv", ["kdistill", "check-data", str(tmp_path / "r.yaml"), "--workers", "2"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    out, err = capsys.readouterr()
    assert done.value.code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("broken" in line for line in lines)  # all three in one pass
    assert sum("not an image Pillow can read" in line for line in lines) == 2
    assert any("broken0.jpg: cannot decode the image" in line for line in lines)
    assert err.strip().startswith("error: check-data: 3 of 15 samples cannot be read (listed above)")
    assert "data.images.skip_unreadable: true" in err and len(err.strip().splitlines()) == 1


def test_check_data_passes_clean_data_and_shows_at_most_twenty(tmp_path):
    said = []
    assert check_recipe_data(load_recipe(recipe(photos(tmp_path / "clean", bad=0))), echo=said.append) == 12
    assert said == ["check-data: all 12 samples decode (8 training, 4 test)"]
    root = photos(tmp_path / "many", good=2, bad=25)
    said.clear()
    with pytest.raises(KDistillError, match="25 of 29 samples cannot be read \\(the first 20 listed above\\)"):
        check_recipe_data(load_recipe(recipe(root)), echo=said.append)
    assert len(said) == 20
