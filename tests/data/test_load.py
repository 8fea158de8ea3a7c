"""Choosing and applying the preprocessing (kdistill/data/load.py: choose_preprocess, prepare_data):
a teacher's recorded preprocessing is read back with its weights, and a user's data is never
normalised unless asked."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from kdistill import run
from kdistill.data import ArraySource, Preprocess, normalize, read_preprocess
from kdistill.data.idx import load_idx_folder
from kdistill.data.load import choose_preprocess, prepare_data
from kdistill.errors import KDistillError
from kdistill.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "kdistill" / "recipes"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
STUDENT = {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}


def _raw_digits():
    """scikit-learn's digits as they come (0..16, float32, (N, 1, 8, 8)), split as the digits source splits them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(bunch.images.astype(np.float32)[:, None], bunch.target, test_size=0.25,
                                              random_state=0, stratify=bunch.target)
    return (x_tr, y_tr), (x_te, y_te)


def _metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_the_demo_teacher_gets_the_mean_and_std_it_always_had():
    recorded = read_preprocess(RECIPES / "fmnist_teacher.safetensors")
    if not FMNIST.is_file():
        pytest.skip("Fashion-MNIST not installed (make data)")
    recipe = load_recipe(RECIPES / "demo.yaml")
    train, _ = load_idx_folder()
    mode, chosen = choose_preprocess(recipe, train, custom=False)
    assert mode == "teacher" and chosen == Preprocess(255.0, recorded.mean, recorded.std)
    # the statistics it computed before (equal up to the float sums' order, which the thread count sets)
    mean, std = normalize(train)
    assert list(chosen.mean) == pytest.approx(mean, rel=1e-6) and list(chosen.std) == pytest.approx(std, rel=1e-6)


class RawTeacher(nn.Module):
    """A user's teacher, trained by hand on raw digit features (0..16), not standardised."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


def _train_raw_teacher(x, y):
    torch.manual_seed(0)
    teacher = RawTeacher()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    return teacher.eval()


def test_a_users_data_is_not_normalised_unless_asked(tmp_path):
    train, test = _raw_digits()
    teacher = _train_raw_teacher(*train)
    with torch.no_grad():
        own = (teacher(torch.as_tensor(test[0])).argmax(1) == torch.as_tensor(test[1])).float().mean().item()
    assert own > 0.9
    recipe = {"name": "raw", "latency": False, "data": {"source": "custom", "labelled": 100}, "student": STUDENT,
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}
    result = run(recipe, teacher=teacher, data=(train, test), runs_dir=tmp_path, progress=False)
    assert result.summary["data"]["normalize"] == "none"
    assert result.summary["data"]["preprocess"] == {"divide_by": 1.0, "mean": None, "std": None}
    assert result.summary["test"]["teacher"]["accuracy"] == own  # the teacher sees the inputs it was trained on
    asked = run({**recipe, "name": "asked", "data": {"source": "custom", "labelled": 100, "normalize": True}},
                teacher=teacher, data=(train, test), runs_dir=tmp_path, progress=False)
    assert asked.summary["data"]["normalize"] == "data" and len(asked.summary["data"]["preprocess"]["mean"]) == 1
    check = asked.summary["data"]["teacher_accuracy"]  # asked for: the damage is shown, not hidden
    assert check["samples"] == len(test[1]) and check["before"] == own and check["after"] < own


def test_the_teachers_recorded_preprocessing_is_written_and_read_back(tmp_path, capsys):
    teacher_spec = {"model": "cnn", "args": {"channels": [8], "image_size": 8}}
    first = run({"name": "t", "data": {"source": "digits", "labelled": 0}, "latency": False, "teacher": teacher_spec,
                 "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 2}]},
                runs_dir=tmp_path, progress=False)
    metadata = _metadata(first.run_dir / "teacher.safetensors")
    assert set(metadata) == {"recipe", "preprocess", "test_accuracy"}  # the accuracy: checked when loaded
    recorded = Preprocess.from_metadata(metadata)
    assert recorded.divide_by == 16.0 and len(recorded.mean) == 1 and first.summary["data"]["normalize"] == "data"
    # the user's raw digits (0..16) with that teacher: divided by 16 and standardised as it was trained
    recipe = {"name": "distil", "latency": False, "data": {"source": "custom", "labelled": 50},
              "teacher": {**teacher_spec, "weights": str(first.run_dir / "teacher.safetensors")}, "student": STUDENT,
              "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}
    capsys.readouterr()
    result = run(recipe, data=_raw_digits(), runs_dir=tmp_path, progress=False)
    data = result.summary["data"]
    assert data["normalize"] == "teacher" and data["preprocess"] == recorded.to_dict()
    assert result.summary["test"]["teacher"]["accuracy"] == first.summary["test"]["teacher"]["accuracy"]
    assert data["teacher_accuracy"]["after"] == pytest.approx(first.summary["test"]["teacher"]["accuracy"])
    assert data["teacher_accuracy"]["before"] < data["teacher_accuracy"]["after"]
    assert "teacher accuracy on 450 test inputs" in capsys.readouterr().err
    # the student inherits it: its weights record the same preprocessing
    assert Preprocess.from_metadata(_metadata(result.run_dir / "student.safetensors")) == recorded
    # inputs already divided are refused, not divided twice
    divided = [(x / 16, y) for x, y in _raw_digits()]
    with pytest.raises(KDistillError, match=r"already lie in \[-1, 1\].*divided_by=16"):
        prepare_data(load_recipe(recipe), divided)
    assert prepare_data(load_recipe(recipe), [ArraySource(x, y, 10, 16.0) for x, y in divided])[1]["preprocess"] == \
        recorded.to_dict()


def test_normalize_teacher_needs_a_recorded_preprocessing(tmp_path):
    recipe = load_recipe({"data": {"source": "digits", "normalize": "teacher"}, "student": STUDENT,
                          "teacher": {"model": "cnn", "args": {"channels": [8], "image_size": 8}},
                          "stages": [{"name": "s", "loss": [{"loss": "kd"}]}]})
    with pytest.raises(KDistillError, match="data.normalize: 'teacher'.*no weights file"):
        prepare_data(recipe)
    assert load_recipe({"data": {"normalize": False}, "stages": [{"name": "s"}]}).data.normalize == "none"
    assert load_recipe({"data": {"normalize": True}, "stages": [{"name": "s"}]}).data.normalize == "data"
    assert load_recipe({"stages": [{"name": "s"}]}).data.normalize == "auto"


def test_a_hf_vision_teachers_image_processor_sets_decoding_and_normalisation(tmp_path):
    import json

    from PIL import Image

    from kdistill.data.load import load_sources

    model = tmp_path / "vit"
    model.mkdir()
    (model / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 12, "width": 12}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    photos = tmp_path / "photos"
    for c in ("a", "b"):
        (photos / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20 + i, 30), (40 * i, 100, 200)).save(photos / c / f"{i}.png")
    recipe = load_recipe({"name": "v", "device": "cpu",
                          "data": {"source": "image_folder", "path": str(photos), "labelled": 4, "files": {"test": 2}},
                          "teacher": {"model": "hf_vision", "args": {"path": str(model)}},
                          "student": {"model": "cnn"}, "stages": [{"name": "s", "data": "transfer",
                                                                    "loss": [{"loss": "kd"}]}]})
    train, _ = load_sources(recipe)
    assert train.fetch(torch.tensor([0, 5])).shape == (2, 3, 12, 12)  # the processor's square resize
    mode, chosen = choose_preprocess(recipe, train, custom=False)
    assert mode == "teacher" and chosen == Preprocess(255.0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_class_names_are_recorded_with_the_weights_and_checked_against_the_data(tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    teacher_spec = {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}
    first = run({"name": "t", "data": {"source": "digits", "labelled": 0, "classes": names}, "latency": False,
                 "teacher": teacher_spec, "stages": [{"name": "teacher", "train": "teacher", "data": "full",
                                                      "epochs": 1}]}, runs_dir=tmp_path, progress=False)
    weights = first.run_dir / "teacher.safetensors"
    assert first.summary["classes"] == names and json.loads(_metadata(weights)["classes"]) == names

    def distil(classes):
        data = {"source": "digits", "labelled": 50, **({"classes": classes} if classes else {})}
        return load_recipe({"name": "d", "data": data, "teacher": {**teacher_spec, "weights": str(weights)},
                            "student": STUDENT, "stages": [{"name": "s", "loss": [{"loss": "kd"}]}]})

    prepare_data(distil(names))  # the same names, in the same order
    prepare_data(distil(None))  # the digits' classes are only numbers: nothing to compare
    with pytest.raises(KDistillError, match=r"trained on other classes, in another order: \[nine, .*\] vs \[zero, .*"
                                            r"set data.classes to the teacher's names in its order"):
        prepare_data(distil(list(reversed(names))))
    with pytest.raises(KDistillError, match=r"trained on other classes, different names"):
        prepare_data(distil(names[:9] + ["ten"]))
    prepare_data(distil([n.upper() for n in names]))  # compared without case or punctuation


def test_known_class_names():
    from kdistill.data.idx import FASHION_MNIST_CLASSES
    from kdistill.data.load import class_names, known_class_names

    fmnist = load_recipe({"data": {"source": "fashion_mnist"}, "stages": [{"name": "s"}]})
    assert known_class_names(fmnist) == FASHION_MNIST_CLASSES
    assert class_names(fmnist, 10) == FASHION_MNIST_CLASSES and class_names(fmnist, 4) == ["0", "1", "2", "3"]
    named = load_recipe({"data": {"source": "digits", "classes": ["a", "b"]}, "stages": [{"name": "s"}]})
    assert known_class_names(named, ArraySource(torch.zeros(2, 1), torch.tensor([0, 1]))) == ["a", "b"]
    digits = load_recipe({"data": {"source": "digits"}, "stages": [{"name": "s"}]})
    assert known_class_names(digits) is None and class_names(digits, 2) == ["0", "1"]


def test_the_demo_teacher_records_the_fashion_mnist_names_and_natural_folders_must_follow_them():
    from types import SimpleNamespace

    from kdistill.data.idx import FASHION_MNIST_CLASSES
    from kdistill.data.load import check_teacher_classes
    from kdistill.data.weights_meta import read_classes

    assert read_classes(RECIPES / "fmnist_teacher.safetensors") == FASHION_MNIST_CLASSES
    check_teacher_classes(load_recipe(RECIPES / "demo.yaml"), SimpleNamespace(classes=None))  # its own data
    folders = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
               "ankle_boot"]
    photos = ["data.source=image_folder", "data.path=photos"]
    with pytest.raises(KDistillError, match=r"other classes, in another order: \[ankle_boot, bag, coat, .*\] vs "
                                            r"\[T-shirt/top, Trouser, .*set data.classes to the teacher's names"):
        check_teacher_classes(load_recipe(RECIPES / "demo.yaml", photos), SimpleNamespace(classes=sorted(folders)))
    # the folders' own spellings in the teacher's order: accepted (names compared without case and punctuation)
    named = load_recipe(RECIPES / "demo.yaml", [*photos, f"data.classes=[{', '.join(folders)}]"])
    check_teacher_classes(named, SimpleNamespace(classes=folders))
