"""The image_folder source (kdistill/data/image_folder.py): class folders, CSV / JSONL lists, test
sets, seeded decoding, and whole runs on a folder of JPEGs through the Python API and the CLI."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from kdistill.data.image_folder import ImageFolderSource, load_image_folder_source, read_images
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec

from fixtures import cli_in_process

SIZES = [(20, 30), (33, 17), (24, 24), (17, 40)]


def _image(path, i, w=None, h=None, color=None):
    """A small RGB JPEG (noise around a colour), sized from SIZES unless given."""
    w, h = (w, h) if w else SIZES[i % len(SIZES)]
    rng = np.random.default_rng(i)
    base = np.array(color if color is not None else rng.integers(0, 256, 3), dtype=np.int64)
    a = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, "JPEG")
    return path


def _folder(root, counts=(4, 4, 4), classes=("cat", "dog", "emu")):
    """root/<class>/... with counts[k] images of class k (one nested, one with an upper-case suffix)."""
    for k, (name, n) in enumerate(zip(classes, counts)):
        for i in range(n):
            sub = "deep/" if i == 1 else ""
            suffix = ".JPG" if i == 2 else ".jpg"
            _image(root / name / f"{sub}{i:03d}{suffix}", 10 * k + i)
    return root


def _spec(path, **data):
    return DataSpec(source="image_folder", path=str(path), **data)


SQUARE = {"size": 16, "crop": 16}


def test_labels_and_classes_come_from_the_subfolders(tmp_path):
    root = _folder(tmp_path / "pics", counts=(3, 4, 5))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.jpg").write_bytes(b"macOS metadata")
    source = read_images(root, _spec(root, images=SQUARE), "data.path")
    assert source.classes == ["cat", "dog", "emu"] and source.num_classes == 3
    assert source.y.tolist() == [0] * 3 + [1] * 4 + [2] * 5
    assert source.path(1).endswith(os.path.join("cat", "002.JPG"))  # sorted, upper-case suffix found
    assert source.path(2).endswith(os.path.join("cat", "deep", "001.jpg"))  # found in a nested folder
    x = source.fetch(torch.tensor([0, 5, 11]))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.uint8
    assert source.scale == 255 and not source.random and not source.in_memory


def test_train_and_test_subfolders_share_the_training_classes(tmp_path):
    _folder(tmp_path / "set" / "train", counts=(3, 3, 3))
    _folder(tmp_path / "set" / "test", counts=(2,), classes=("dog",))
    train, test = load_image_folder_source(str(tmp_path / "set"), _spec(tmp_path / "set", images=SQUARE))
    assert len(train) == 9 and train.classes == ["cat", "dog", "emu"]
    assert test.y.tolist() == [1, 1] and test.num_classes == 3  # dog is class 1 of the training set
    _folder(tmp_path / "set" / "test", counts=(1,), classes=("yak",))
    with pytest.raises(KDistillError, match="yak"):
        load_image_folder_source(str(tmp_path / "set"), _spec(tmp_path / "set", images=SQUARE))


def test_test_path_or_a_held_out_test_set(tmp_path):
    root = _folder(tmp_path / "pics", counts=(5, 5, 5))
    train, test = load_image_folder_source(str(root), _spec(root, images=SQUARE, files={"test": 6}))
    assert (len(train), len(test)) == (9, 6)
    assert sorted(test.y.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified
    assert test.classes == ["cat", "dog", "emu"] and test.fetch(torch.arange(6)).shape == (6, 3, 16, 16)
    again = load_image_folder_source(str(root), _spec(root, images=SQUARE, files={"test": 6}))[1]
    assert torch.equal(again.rows, test.rows)  # the same split every time
    other = _folder(tmp_path / "other", counts=(0, 2), classes=("cat", "dog"))
    train, test = load_image_folder_source(str(root), _spec(root, images=SQUARE, files={"test_path": str(other)}))
    assert len(train) == 15 and test.y.tolist() == [1, 1]


def _list_rows(tmp_path):
    """Six images in tmp_path/img, listed with class names; two rows unlabelled."""
    rows = []
    for i, label in enumerate(["cat", "", "dog", "cat", None, "dog"]):
        _image(tmp_path / "img" / f"{i}.jpg", i)
        rows.append({"path": f"img/{i}.jpg", "label": label})
    return rows


def test_a_csv_list_with_class_names_and_unlabelled_rows(tmp_path):
    rows = _list_rows(tmp_path)
    lines = ["path,label"] + [f"{r['path']},{r['label'] or ''}" for r in rows]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    source = read_images(tmp_path / "list.csv", _spec(tmp_path / "list.csv", images=SQUARE), "data.path")
    assert source.classes == ["cat", "dog"] and source.num_classes == 2
    assert source.y.tolist() == [0, -1, 1, 0, -1, 1]
    assert source.fetch(torch.tensor([4])).shape == (1, 3, 16, 16)  # unlabelled rows are images too
    train, test = load_image_folder_source(str(tmp_path / "list.csv"),
                                           _spec(tmp_path / "list.csv", images=SQUARE, files={"test": 2}))
    assert sorted(test.y.tolist()) == [0, 1] and (train.y == -1).sum() == 2  # held out of the labelled rows


def test_a_jsonl_list_with_integer_labels_absolute_paths_and_own_columns(tmp_path):
    rows = _list_rows(tmp_path)
    lines = [json.dumps({"file": str(tmp_path / r["path"]), **({"y": i % 3} if i != 1 else {})})
             for i, r in enumerate(rows)]
    (tmp_path / "list.jsonl").write_text("\n".join(lines) + "\n\n")
    spec = _spec(tmp_path / "list.jsonl", images=SQUARE, files={"path_column": "file", "label_column": "y"})
    source = read_images(tmp_path / "list.jsonl", spec, "data.path")
    assert source.y.tolist() == [0, -1, 2, 0, 1, 2] and source.classes is None and source.num_classes == 3
    spec = _spec(tmp_path / "list.jsonl", files={"path_column": "file", "label_column": None})
    assert read_images(tmp_path / "list.jsonl", spec, "data.path").y.tolist() == [-1] * 6  # no labels read


def test_a_test_list_maps_its_names_to_the_training_classes(tmp_path):
    root = _folder(tmp_path / "pics", counts=(2, 2, 2))
    _image(tmp_path / "t" / "a.jpg", 1)
    _image(tmp_path / "t" / "b.jpg", 2)
    (tmp_path / "t" / "test.csv").write_text("path,label\na.jpg,emu\nb.jpg,cat\n")
    spec = _spec(root, images=SQUARE, files={"test_path": str(tmp_path / "t" / "test.csv")})
    _, test = load_image_folder_source(str(root), spec)
    assert test.y.tolist() == [2, 0] and test.classes == ["cat", "dog", "emu"]
    (tmp_path / "t" / "test.csv").write_text("path,label\na.jpg,emu\nb.jpg,owl\n")
    with pytest.raises(KDistillError, match="'owl' at row 2 is not one of the classes"):
        load_image_folder_source(str(root), spec)


@pytest.mark.parametrize("case, message", [
    ("empty", "empty"),
    ("loose", "no class subfolders"),
    ("no_images", "holds no images"),
    ("txt_list", "neither a folder"),
    ("no_column", "no column 'path'"),
    ("missing_file", "not found"),
    ("missing_path", "not found"),
    ("bad_json", "line 2 is not JSON"),
])
def test_bad_data_gives_one_line(tmp_path, case, message):
    target = tmp_path / "data"
    target.mkdir()
    if case == "loose":
        _image(target / "a.jpg", 0)
    elif case == "no_images":
        (target / "cat").mkdir()
        (target / "cat" / "a.txt").write_text("x")
    elif case == "txt_list":
        target = tmp_path / "list.txt"
        target.write_text("a.jpg\n")
    elif case == "no_column":
        target = tmp_path / "list.csv"
        target.write_text("file,label\na.jpg,cat\n")
    elif case == "missing_file":
        target = tmp_path / "list.csv"
        target.write_text("path,label\nnope.jpg,cat\n")
    elif case == "missing_path":
        target = tmp_path / "nowhere"
    elif case == "bad_json":
        target = tmp_path / "list.jsonl"
        target.write_text('{"path": "a.jpg"}\n{oops\n')
    with pytest.raises(KDistillError, match=message) as err:
        load_image_folder_source(str(target), _spec(target))
    assert "\n" not in str(err.value)


def test_images_of_different_sizes_need_resize_or_crop(tmp_path):
    root = _folder(tmp_path / "pics", counts=(2, 2))
    source = read_images(root, _spec(root), "data.path")
    with pytest.raises(KDistillError, match="resize"):
        source.fetch(torch.tensor([0, 1]))
    assert source.fetch(torch.tensor([0])).shape == (1, 3, 30, 20)  # one image as stored


def test_views_are_seeded_by_seed_epoch_and_sample(tmp_path):
    root = _folder(tmp_path / "pics", counts=(3, 3))
    spec = _spec(root, images={"size": 16, "crop": 12, "random_crop": True, "flip": True})
    source = read_images(root, spec, "data.path")
    assert source.random
    index = torch.tensor([4, 0, 2])
    a = source.fetch(index, (7, 0))
    assert a.shape == (3, 3, 12, 12) and torch.equal(a, source.fetch(index, (7, 0)))
    assert torch.equal(a[1:2], source.fetch(torch.tensor([0]), (7, 0)))  # a sample's view is its own
    assert not torch.equal(a, source.fetch(index, (7, 1)))  # another epoch, another crop
    assert not torch.equal(a, source.fetch(index, (8, 0)))
    plain = source.fetch(index)
    assert torch.equal(plain, source.fetch(index)) and not torch.equal(plain, a)
    clone = pickle.loads(pickle.dumps(source))  # what a DataLoader worker gets
    assert torch.equal(clone.fetch(index, (7, 0)), a)


def test_fingerprint_follows_files_spec_and_classes(tmp_path):
    root = _folder(tmp_path / "pics", counts=(2, 2))
    spec = _spec(root, images=SQUARE)
    first = read_images(root, spec, "data.path").fingerprint()
    assert read_images(root, spec, "data.path").fingerprint() == first
    assert read_images(root, _spec(root, images={"size": 8}), "data.path").fingerprint() != first
    touched = next((root / "dog").glob("*.jpg"))
    os.utime(touched, ns=(0, 10**9))
    assert read_images(root, spec, "data.path").fingerprint() != first
    assert isinstance(read_images(root, spec, "data.path"), ImageFolderSource)


# --- whole runs -------------------------------------------------------------------------------------------------

COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
NET = {"model": "cnn", "args": {"in_channels": 3, "num_classes": 3, "channels": [8, 16], "image_size": 16}}


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """3 classes of 14 RGB JPEGs of different sizes, each class around its own colour."""
    root = tmp_path_factory.mktemp("jpegs")
    for k, (name, color) in enumerate(zip(("red", "green", "blue"), COLORS)):
        for i in range(14):
            _image(root / name / f"{i:02d}.jpg", 100 * k + i, *SIZES[(i + k) % len(SIZES)], color=color)
    return root


def _recipe(name, folder, images=None, workers=0):
    return {
        "name": name, "seed": 0, "threads": 1, "latency": False,
        "data": {"source": "image_folder", "path": str(folder), "images": images or SQUARE,
                 "labelled": 6, "files": {"test": 9}, "loader": {"workers": workers}},
        "teacher": NET,
        "student": {"model": "cnn", "args": {**NET["args"], "channels": [4, 8]}},
        "stages": [
            {"name": "teacher", "train": "teacher", "data": "full", "epochs": 2, "batch_size": 8},
            {"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 8, "loss": [{"loss": "kd"}]},
        ],
    }


def test_a_run_on_a_folder_of_jpegs(tmp_path, jpegs, monkeypatch):
    from matplotlib.figure import Figure

    from kdistill import run

    # the report's figures are built from the run but not rasterised (seconds otherwise)
    # (savefig is given the file kdistill opened: an empty PNG is left)
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: None)
    result = run(_recipe("folder", jpegs), runs_dir=tmp_path, progress=False)
    summary = json.loads((tmp_path / "folder" / "summary.json").read_text())
    assert 0.0 <= summary["test"]["student"]["accuracy"] <= 1.0
    assert summary["test"]["student"] == result.summary["test"]["student"]
    assert summary["data"]["labelled"] == 6 and summary["data"]["transfer"] == 42 - 9 - 6
    assert "student (distilled)" in (tmp_path / "folder" / "report.md").read_text()


def test_the_cli_runs_a_folder_of_jpegs(tmp_path, jpegs, monkeypatch, capsys):
    """``kdistill run recipe.yaml key=value --runs-dir DIR``, in this process (a subprocess would
    spend seconds importing torch; tests/test_cli.py runs the real command)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe("cli", jpegs)))
    out = cli_in_process(["run", recipe, "stages.distil.epochs=1", "--runs-dir", tmp_path / "runs", "-q"],
                         monkeypatch, capsys)
    assert out == str(tmp_path / "runs" / "cli")
    summary = json.loads((tmp_path / "runs" / "cli" / "summary.json").read_text())
    assert 0.0 <= summary["test"]["student"]["accuracy"] <= 1.0
    assert [json.loads(line)["stage"] for line in (tmp_path / "runs" / "cli" / "metrics.jsonl").open()] == \
        ["teacher", "teacher", "distil"]


def test_random_views_train_the_same_student_with_0_or_2_workers(tmp_path, jpegs, monkeypatch):
    """Random crops and flips are drawn per (seed, epoch, sample), whichever process decodes them."""
    from kdistill import run

    monkeypatch.setattr("kdistill.runner.write_report", lambda *a, **k: None)  # its figures take seconds
    images = {"size": 20, "crop": 16, "random_crop": True, "flip": True}
    for workers in (0, 2):
        run(_recipe(f"w{workers}", jpegs, images, workers), runs_dir=tmp_path, progress=False)
    a, b = (load_file(tmp_path / f"w{w}" / "student.safetensors") for w in (0, 2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
