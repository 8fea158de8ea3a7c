"""The hf_dataset source (kdistill/data/hf_dataset.py): saved datasets and data files, read
batch by batch from memory-mapped Arrow, images decoded as the recipe asks."""

import json
import pickle

import numpy as np
import yaml
import pytest
import torch

datasets = pytest.importorskip("datasets")
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from kdistill.data.hf_dataset import load_hf_dataset_source
from kdistill.data.loader import BatchLoader
from kdistill.data.samples import Inputs
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec

from fixtures import cli_in_process, two_class_recipe


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """datasets' cache (where parquet / json / csv files are converted) under tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _spec(path, images=None, **files):
    return DataSpec(source="hf_dataset", path=str(path), images=images or {}, files=files)


def _pictures(n, seed=0):
    """``n`` small RGB images of different widths, and their pixels."""
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (16, 12 + i % 5, 3), dtype=np.uint8) for i in range(n)]
    return [PILImage.fromarray(p) for p in pixels], pixels


def _image_dataset(n=12, seed=0, labels=None):
    images, _ = _pictures(n, seed)
    labels = [i % 3 for i in range(n)] if labels is None else labels
    features = Features({"image": Image(), "label": ClassLabel(names=["cat", "dog", "fox"])})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_saved_image_dataset_gives_byte_batches_and_class_names(tmp_path):
    _image_dataset().save_to_disk(tmp_path / "ds")
    train, test = load_hf_dataset_source(tmp_path / "ds", _spec(tmp_path / "ds", {"size": 8, "crop": 8}, test=3))
    assert len(train) == 9 and len(test) == 3  # held out: no test split
    assert train.classes == ["cat", "dog", "fox"] and train.num_classes == 3
    x = train.fetch(torch.tensor([4, 0, 2]))
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.uint8
    assert train.scale == 255.0 and not train.random and not train.tokens
    base = train.base
    assert torch.equal(base.fetch(torch.tensor([5])), base.fetch(torch.tensor([2, 5]))[1:])  # rows as asked


def test_fetch_decodes_the_stored_image(tmp_path):
    _image_dataset(6).save_to_disk(tmp_path / "ds")
    _, pixels = _pictures(6)
    train, _ = load_hf_dataset_source(tmp_path / "ds", _spec(tmp_path / "ds", test=3))
    x = train.base.fetch(torch.tensor([0, 5]))  # no size: as stored (all 16 x 12 at rows 0 and 5)
    assert torch.equal(x[1], torch.from_numpy(pixels[5]).permute(2, 0, 1))


def test_dataset_dict_uses_its_splits(tmp_path):
    DatasetDict({"training": _image_dataset(9), "holdout": _image_dataset(6, seed=1)}).save_to_disk(tmp_path / "dd")
    spec = _spec(tmp_path / "dd", {"size": 8, "crop": 8}, train_split="training", test_split="holdout")
    train, test = load_hf_dataset_source(spec.path, spec)
    assert (len(train), len(test)) == (9, 6)
    assert test.y.tolist() == [i % 3 for i in range(6)] and test.classes == train.classes
    assert test.fetch(torch.arange(6)).shape == (6, 3, 8, 8)
    assert len(pickle.dumps(train)) < 20_000  # memory-mapped: workers get the file, not the images
    with pytest.raises(KDistillError, match=r"splits \['training', 'holdout'\] but no 'train'"):
        load_hf_dataset_source(spec.path, _spec(tmp_path / "dd", test_split="holdout"))


def test_test_set_classes_must_match(tmp_path):
    _image_dataset(6).save_to_disk(tmp_path / "train")
    other = Features({"image": Image(), "label": ClassLabel(names=["cat", "fox"])})
    Dataset.from_dict({"image": _pictures(2)[0], "label": [0, 1]}, features=other).save_to_disk(tmp_path / "test")
    spec = _spec(tmp_path / "train", test_path=str(tmp_path / "test"))
    with pytest.raises(KDistillError, match="is a ClassLabel of .* but the classes are"):
        load_hf_dataset_source(spec.path, spec)


def test_partial_labels_and_test_path(tmp_path):
    _image_dataset(6, labels=[0, -1, 2, -1, 1, 0]).save_to_disk(tmp_path / "train")
    _image_dataset(4, seed=1).save_to_disk(tmp_path / "test")
    spec = _spec(tmp_path / "train", {"size": 8, "crop": 8}, test_path=str(tmp_path / "test"))
    train, test = load_hf_dataset_source(spec.path, spec)
    assert train.y.tolist() == [0, -1, 2, -1, 1, 0] and len(test) == 4


def test_parquet_array_column(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 8, 8), dtype=np.uint8)
    features = Features({"pixels": Array2D((8, 8), "uint8"), "target": Value("int64")})
    Dataset.from_dict({"pixels": x.tolist(), "target": [0, 1] * 5}, features=features).to_parquet(tmp_path / "d.parquet")
    spec = _spec(tmp_path / "d.parquet", image_column="pixels", label_column="target", test=2)
    train, _ = load_hf_dataset_source(spec.path, spec)
    base = train.base
    got = base.fetch(torch.tensor([7, 3, 9]))
    assert got.dtype == torch.uint8 and got.shape == (3, 1, 8, 8)  # (H, W) gains a channel axis
    assert torch.equal(got[:, 0], torch.from_numpy(x[[7, 3, 9]]))
    assert base.scale == 255.0 and not base.tokens
    assert len(pickle.dumps(base)) < 20_000  # memory-mapped: workers get the file, not the data


def test_float_arrays_and_folder_of_split_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        x = rng.normal(size=(n, 5)).astype(np.float64)
        (tmp_path / "data").mkdir(exist_ok=True)
        Dataset.from_dict({"image": x.tolist(), "label": list(range(n))}).to_parquet(
            tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    train, test = load_hf_dataset_source(tmp_path, _spec(tmp_path))
    assert (len(train), len(test)) == (8, 4)
    x = train.fetch(torch.tensor([1, 0]))
    assert x.dtype == torch.float32 and x.shape == (2, 5) and train.scale == 1.0
    assert train.num_classes == test.num_classes == 8


def test_csv_of_image_paths_and_class_names(tmp_path):
    images, _ = _pictures(6)
    rows = ["file,kind"]
    for i, img in enumerate(images):
        img.save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    spec = _spec(tmp_path / "list.csv", {"size": 8, "crop": 8, "mode": "grayscale"},
                 image_column="file", label_column="kind", test=2)
    train, test = load_hf_dataset_source(spec.path, spec)
    assert train.classes == ["a", "b"] and sorted(test.y.tolist()) == [0, 1]
    assert train.fetch(torch.arange(4)).shape == (4, 1, 8, 8)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "list.csv").write_text("file,kind\n../0.png,a\n../1.png,c\n")
    other = _spec(tmp_path / "list.csv", image_column="file", label_column="kind",
                  test_path=str(tmp_path / "test" / "list.csv"))
    with pytest.raises(KDistillError, match="label 'c' at sample 1 is not one of the classes"):
        load_hf_dataset_source(other.path, other)


def test_missing_columns_name_the_columns_there(tmp_path):
    _image_dataset(6).save_to_disk(tmp_path / "ds")
    with pytest.raises(KDistillError, match=r"no column 'img'; its columns are \['image', 'label'\]"):
        load_hf_dataset_source(tmp_path / "ds", _spec(tmp_path / "ds", image_column="img"))
    with pytest.raises(KDistillError, match="label_column.*no column 'y'"):
        load_hf_dataset_source(tmp_path / "ds", _spec(tmp_path / "ds", label_column="y"))
    train, _ = load_hf_dataset_source(tmp_path / "ds", _spec(tmp_path / "ds", label_column=None,
                                                             test_path=str(tmp_path / "ds")))
    assert (train.y == -1).all()


def test_paths_that_are_no_dataset_fail_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path, tmp_path / "nothing"):
        with pytest.raises(KDistillError) as err:
            load_hf_dataset_source(path, _spec(path))
        assert "\n" not in str(err.value) and "data.path" in str(err.value)
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(KDistillError, match="cannot read .*bad.parquet as parquet"):
        load_hf_dataset_source(tmp_path / "bad.parquet", _spec(tmp_path / "bad.parquet"))


def test_fingerprint_follows_the_data(tmp_path):
    _image_dataset(6).save_to_disk(tmp_path / "ds")
    spec = _spec(tmp_path / "ds", {"size": 8, "crop": 8}, test=2)
    first = load_hf_dataset_source(spec.path, spec)[0].fingerprint()
    assert load_hf_dataset_source(spec.path, spec)[0].fingerprint() == first  # the same data: the same
    resized = _spec(tmp_path / "ds", {"size": 10, "crop": 8}, test=2)
    assert load_hf_dataset_source(spec.path, resized)[0].fingerprint() != first  # decoded otherwise
    _image_dataset(6, seed=5).save_to_disk(tmp_path / "ds2")
    (tmp_path / "ds").rename(tmp_path / "old")
    (tmp_path / "ds2").rename(tmp_path / "ds")
    assert load_hf_dataset_source(spec.path, spec)[0].fingerprint() != first


def test_random_views_are_seeded_per_sample(tmp_path):
    _image_dataset(6).save_to_disk(tmp_path / "ds")
    spec = _spec(tmp_path / "ds", {"crop": 8, "random_crop": True, "flip": True}, test=2)
    train, _ = load_hf_dataset_source(spec.path, spec)
    assert train.random
    a = train.fetch(torch.tensor([0, 1, 2]), view=(0, 1))
    assert torch.equal(train.fetch(torch.tensor([2, 1, 0]), view=(0, 1)), a.flip(0))  # by sample, not position
    assert not torch.equal(train.fetch(torch.tensor([0, 1, 2]), view=(0, 2)), a)
    assert torch.equal(train.fetch(torch.tensor([0])), train.fetch(torch.tensor([0])))


def test_dataloader_workers_fetch_the_same_batches(tmp_path):
    _image_dataset(12).save_to_disk(tmp_path / "ds")
    spec = _spec(tmp_path / "ds", {"size": 8, "crop": 8, "flip": True}, test=3)
    train, _ = load_hf_dataset_source(spec.path, spec)
    batches = list(torch.arange(len(train)).split(4))
    main = [x for _, x, _ in BatchLoader(Inputs(train), train.y).epoch(batches, view=(3, 0))]
    loader = BatchLoader(Inputs(train), train.y, workers=2)
    workers = [x for _, x, _ in loader.epoch(batches, view=(3, 0))]
    loader.close()
    assert all(torch.equal(a, b) for a, b in zip(main, workers))


def test_run_distils_from_a_saved_dataset_by_python_and_cli(tmp_path, monkeypatch, capsys):
    from kdistill import run

    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = np.where(y[:, None, None] == 1, 200, 40) + rng.integers(-30, 30, (120, 8, 8))  # two easy classes
    images = [PILImage.fromarray(a.astype(np.uint8)).resize((10, 10)) for a in x]  # PNGs, 10 x 10
    features = Features({"image": Image(), "label": ClassLabel(names=["dark", "light"])})
    Dataset.from_dict({"image": images, "label": y.tolist()}, features=features).save_to_disk(tmp_path / "ds")
    recipe = two_class_recipe("hf", {"source": "hf_dataset", "path": str(tmp_path / "ds"), "labelled": 20,
                                     "files": {"test": 20}, "images": {"mode": "grayscale", "size": 8, "crop": 8},
                                     "loader": {"workers": 2}})
    result = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    assert result.summary["data"]["test"] == 20 and result.summary["classes"] == ["dark", "light"]
    assert result.summary["test"]["student"]["accuracy"] > 0.5
    assert json.loads((result.run_dir / "summary.json").read_text())["test"]["student"]["accuracy"] > 0.5
    # the same recipe from the command line, with an override
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**recipe, "name": "cli"}))
    out = cli_in_process(["run", tmp_path / "r.yaml", "data.loader.workers=0", "--runs-dir", tmp_path / "runs", "-q"],
                         monkeypatch, capsys)
    summary = json.loads((tmp_path / "runs" / "cli" / "summary.json").read_text())
    assert out == str(tmp_path / "runs" / "cli") and summary["test"]["student"] == result.summary["test"]["student"]
