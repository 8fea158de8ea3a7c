"""kdistill init: every starter recipe is written and validates; an existing file is kept; an
unknown name lists the templates; the classify template runs end to end on a tiny image folder."""

import json
import subprocess
import sys

import pytest

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.models.weights import save_weights
from kdistill.models.zoo import build_model
from kdistill.recipe import load_recipe
from kdistill.init import TEMPLATES, write_template
from fixtures import write_photos


def kdistill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_is_written_and_validates(name, tmp_path):
    path = write_template(name, tmp_path / "new")
    assert path == tmp_path / "new" / f"{name}.yaml"
    text = path.read_text()
    assert "# change:" in text and "path/to/" in text  # the lines to edit say so
    recipe = load_recipe(path)
    assert recipe.stages and recipe.data.path.startswith("path/to/")


def test_the_cli_writes_into_the_current_folder_and_refuses_an_existing_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kdistill.cli import app

    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(app, ["init", "embed"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == "embed.yaml" and (tmp_path / "embed.yaml").is_file()
    (tmp_path / "embed.yaml").write_text("mine")
    again = kdistill("init", "embed", cwd=tmp_path)  # the real command: one line, exit 2
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    assert (tmp_path / "embed.yaml").read_text() == "mine"  # kept
    forced = CliRunner().invoke(app, ["init", "embed", ".", "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "embed.yaml").read_text() == write_template("embed", tmp_path / "other").read_text()


def test_an_unknown_template_lists_the_known_ones(tmp_path):
    with pytest.raises(KDistillError, match="unknown template 'clasify'") as err:
        write_template("clasify", tmp_path)
    assert all(name in str(err.value) for name in TEMPLATES)
    assert not any(tmp_path.iterdir())


def test_the_classify_template_runs_on_an_image_folder(tmp_path):
    """The template as written, on 12 tiny images; only sizes, epochs and paths overridden."""
    path = write_template("classify", tmp_path)
    photos = write_photos(tmp_path / "photos", good=6, bad=0)
    teacher_args = {**load_recipe(path).teacher.args, "num_classes": 2, "image_size": 8}
    # a teacher with the template's architecture (untrained: the check of its accuracy is off)
    save_weights(build_model("cnn", **teacher_args), tmp_path / "teacher.safetensors")
    overrides = [f"data.path={photos}", "data.images.size=[8, 8]", "data.labelled=4", "data.files.test=4",
                 "data.check_teacher=false", f"teacher.weights={tmp_path / 'teacher.safetensors'}",
                 "teacher.args.num_classes=2", "teacher.args.image_size=8", "student.args.image_size=8",
                 "stages.baseline.epochs=1", "stages.distil.epochs=1", "stages.finetune.epochs=1",
                 "latency=false", "threads=1"]
    result = run(path, overrides, runs_dir=tmp_path / "runs", progress=False)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert result.run_dir.name == "my-classifier"
    for role in ("teacher", "baseline", "student"):
        assert 0.0 <= summary["test"][role]["accuracy"] <= 1.0


def test_the_templates_ship_in_the_wheel():
    """pyproject's package-data names every template file (a wheel holds only what it names)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kdistill"]
    files = sorted((root / "kdistill" / "recipes" / "templates").glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(TEMPLATES)
    for f in files:
        assert any(fnmatch.fnmatchcase(str(f.relative_to(root / "kdistill")), g) for g in globs), f.name
