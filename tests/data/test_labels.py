"""The one label rule (kdistill/data/labels.py), and every source applying it: arrays, tensors,
a user's dataset, .npy label files, CSV / JSONL image lists, CSV texts, Hugging Face columns and
class folders (with data.classes, an unlabelled/ folder, an empty class folder)."""

import numpy as np
import pytest
import torch
from PIL import Image

from kdistill.data import ArraySource, DatasetSource
from kdistill.data.arrays import read_labels
from kdistill.data.image_folder import load_image_folder_source
from kdistill.data.labels import label_ids, names_differ, names_shown
from kdistill.data.text import load_csv
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec


def test_ids_names_and_blanks():
    assert label_ids(torch.tensor([0, 2, -1]), "d")[0].tolist() == [0, 2, -1]
    assert label_ids(np.array([0.0, 1.0, -1.0]), "d")[0].tolist() == [0, 1, -1]  # whole floats are ids
    assert label_ids(["1", " 0 ", "", None, 2], "d")[0].tolist() == [1, 0, -1, -1, 2]
    ids, names = label_ids(["dog", "cat", "", "dog"], "d")
    assert names == ["cat", "dog"] and ids.tolist() == [1, 0, -1, 1]  # sorted names by default
    ids, names = label_ids(["dog", "cat", ""], "d", classes=["dog", "cat"])  # data.classes: its order
    assert names == ["dog", "cat"] and ids.tolist() == [0, 1, -1]
    ids, names = label_ids(["1", "0"], "d", classes=["dog", "cat"])  # ids index data.classes
    assert names == ["dog", "cat"] and ids.tolist() == [1, 0]
    assert label_ids(np.array([True, False]), "d")[0].tolist() == [1, 0]
    assert label_ids(np.array([0, 5, 999]), "d")[0].tolist() == [0, 5, 999]  # below 1,000: never too far
    assert label_ids(np.zeros(0), "d")[0].tolist() == []


@pytest.mark.parametrize("values, match", [
    (np.array([0.0, 1.0, np.nan]), r"label nan at sample 2 is not a class id"),
    (torch.tensor([0.0, float("inf")]), r"label inf at sample 1 is not a class id"),
    ([0, 1, 1.5], r"label 1.5 at sample 2 is not a class id"),
    (["0", "1", "nan", "1"], r"label nan at sample 2 is not a class id"),
    (["0", "1", "cat", "1"], r"label 'cat' at sample 2 mixes class names and integer ids"),
    (["cat", "dog", "3"], r"label 3 at sample 2 mixes class names and integer ids"),
    (np.array([0, 1, -2]), r"label -2 at sample 2 is negative"),
    (np.array([0, 1, 10**9]), r"label 1000000000 at sample 2 is far beyond the data's 3 distinct"),
    ([0, 1, 2**62], r"label 4611686018427387904 at sample 2 is far beyond"),
    ([0, 2**70], r"label 1180591620717411303424 at sample 1 is far beyond"),
    (np.array([0.0, 1e30]), r"label 1e\+30 at sample 1 is far beyond"),
    (np.array([0, 2**64 - 1], dtype=np.uint64), r"label 18446744073709551615 at sample 1 is far beyond"),
    ([0, 1, 1000], r"label 1000 at sample 2 is far beyond the data's 3 distinct"),
    (np.arange(1000, 101_000), r"label 100999 at sample 99999 is far beyond"),  # over the fixed cap
    ([[0, 1], [1, 0]], r"shape \(2, 2\)"),
    ([0, [1]], r"label \[1\] at sample 1 is not a class id"),
])
def test_bad_labels_are_refused_in_one_line(values, match):
    with pytest.raises(KDistillError, match=match) as err:
        label_ids(values, "data.path: y.csv")
    assert str(err.value).startswith("data.path: y.csv: ") and "\n" not in str(err.value)


def test_names_must_be_in_data_classes():
    with pytest.raises(KDistillError, match=r"label 'Dog' at row 2 is not one of the classes \[dog, cat\] "
                                            r"\(the data's names: \[Dog, cat\]\)"):
        label_ids(["cat", "Dog"], "d", classes=["dog", "cat"], row=lambda i: f"row {i + 1}")
    with pytest.raises(KDistillError, match=r"label 2 at sample 1 is beyond the 2 class names"):
        label_ids(["1", "2"], "d", classes=["dog", "cat"])


def test_messages_shorten_long_lists():
    text = names_shown([f"class_{i}" for i in range(100)])
    assert len(text) < 100 and text.endswith(", ...]")
    assert names_differ(["a", "b"], ["a", "b"]) is None
    assert names_differ(["b", "a"], ["a", "b"]).startswith("in another order")
    assert names_differ(["a", "c"], ["a", "b"]).startswith("different names")
    # compared loosely: no folder can be named T-shirt/top
    assert names_differ(["t-shirt_top", "ankle boot"], ["T-shirt/top", "Ankle_Boot"]) is None


# -- every source applies the rule ----------------------------------------------------------------

def test_arrays_tensors_and_datasets_refuse_bad_labels():
    x = torch.zeros(3, 4)
    with pytest.raises(KDistillError, match=r"^data: label nan at sample 1 is not a class id"):
        ArraySource(x, torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(KDistillError, match="label 1.5 at sample 2"):
        ArraySource(x, np.array([0, 1, 1.5]))
    with pytest.raises(KDistillError, match="label 1000000000 at sample 2 is far beyond"):
        ArraySource(x, torch.tensor([0, 1, 10**9]))  # refused before a head of 1e9 outputs is built
    with pytest.raises(KDistillError, match="label 3 at sample 2 is beyond the 3 class names"):
        ArraySource(x, torch.tensor([0, 1, 3]), num_classes=3)
    assert ArraySource(x, np.array([0.0, 2.0, -1.0])).num_classes == 3  # whole floats: ids as they are
    named = ArraySource(x, np.array(["dog", "cat", "dog"]))  # names: sorted, unless data.classes orders them
    assert named.classes == ["cat", "dog"] and named.y.tolist() == [1, 0, 1] and named.num_classes == 2

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):  # the labels are tensors, the last one fractional
            return torch.zeros(4), torch.tensor([0.0, 1.0, 1.5][i])

    with pytest.raises(KDistillError, match="label 1.5 at sample 2 is not a class id"):
        DatasetSource(Items(), name="data (training set)")


def test_npy_label_files_refuse_nan_and_huge_ids(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0.0, np.nan, 1.0]))
    with pytest.raises(KDistillError, match=r"data.files.labels: .*y.npy: label nan at sample 1"):
        read_labels(tmp_path / "y.npy", "data.files.labels")
    np.save(tmp_path / "y.npy", np.array([0, 1, 2**62]))
    with pytest.raises(KDistillError, match=r"label 4611686018427387904 at sample 2 is far beyond"):
        read_labels(tmp_path / "y.npy", "data.files.labels")


def _jpeg(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(path, "JPEG")


def _spec(path, **data):
    return DataSpec(source="image_folder", path=str(path), images={"size": 6, "crop": 6}, **data)


@pytest.mark.parametrize("label, match", [
    ("nan", "label nan at row 3 is not a class id"),
    ("1.5", "label 1.5 at row 3 is not a class id"),
    ("cat", "label 'cat' at row 3 mixes class names and integer ids"),
    ("-7", "label -7 at row 3 is negative"),
    ("1000000000", "label 1000000000 at row 3 is far beyond"),
])
def test_an_image_list_refuses_a_bad_label(tmp_path, label, match):
    for i in range(4):
        _jpeg(tmp_path / f"{i}.jpg")
    (tmp_path / "list.csv").write_text(f"path,label\n0.jpg,0\n1.jpg,1\n2.jpg,{label}\n3.jpg,1\n", encoding="utf8")
    with pytest.raises(KDistillError, match=f"data.path: .*list.csv: {match}"):
        load_image_folder_source(tmp_path / "list.csv", _spec(tmp_path / "list.csv"))


def test_a_text_csv_refuses_a_bad_label_by_its_line(tmp_path):
    file = tmp_path / "t.csv"
    file.write_text("text,label\na,0\nb,1\nc,inf\n", encoding="utf8")
    with pytest.raises(KDistillError, match=r"data.text.label_column: .*t.csv: label inf at line 4"):
        load_csv(file)


def test_a_hf_column_refuses_fractions_and_maps_names_through_data_classes(tmp_path):
    import datasets

    from kdistill.data.hf_dataset import _read_labels

    numbers = datasets.Dataset.from_dict({"label": [0.0, 2.5, 1.0]})
    with pytest.raises(KDistillError, match=r"column 'label': label 2.5 at sample 1 is not a class id"):
        _read_labels(numbers, "label", None, "hf_dataset")
    names = datasets.Dataset.from_dict({"label": ["fox", "cat", None]})
    ids, classes = _read_labels(names, "label", ["fox", "cat"], "hf_dataset")
    assert classes == ["fox", "cat"] and ids.tolist() == [0, 1, -1]
    labelled = datasets.Dataset.from_dict({"label": [0, 1, 2, -1]}).cast_column(
        "label", datasets.ClassLabel(names=["cat", "dog", "fox"]))
    ids, classes = _read_labels(labelled, "label", ["fox", "dog", "cat"], "hf_dataset")
    assert classes == ["fox", "dog", "cat"] and ids.tolist() == [2, 1, 0, -1]  # ClassLabel ids renumbered by name
    with pytest.raises(KDistillError, match=r"is a ClassLabel of \[cat, dog, fox\], but the classes are \[cat, dog\]"):
        _read_labels(labelled, "label", ["cat", "dog"], "hf_dataset")


# -- class folders ----------------------------------------------------------------------------------

def _folders(root, names=("bag", "coat", "dress")):
    for k, name in enumerate(names):
        for i in range(2):
            _jpeg(root / name / f"{i}.jpg", 40 * k)
    return root


def test_data_classes_fix_the_folder_order(tmp_path):
    root = _folders(tmp_path / "pics")
    train, _ = load_image_folder_source(root, _spec(root, files={"test": 3}))
    assert train.classes == ["bag", "coat", "dress"]  # default: sorted
    order = ["dress", "bag", "coat"]
    train, test = load_image_folder_source(root, _spec(root, classes=order, files={"test": 3}))
    assert train.classes == order and train.num_classes == 3
    whole = train.base  # the training source before its test part was held out
    by_folder = {whole.path(i).split("/")[-2]: int(whole.y[i]) for i in range(len(whole))}
    assert by_folder == {"dress": 0, "bag": 1, "coat": 2}


def test_folders_named_by_integers_are_class_ids(tmp_path):
    root = _folders(tmp_path / "pics", names=("0", "1", "2", "10"))
    train, _ = load_image_folder_source(root, _spec(root, files={"test": 4}))
    whole = train.base
    assert whole.classes is None and whole.num_classes == 11  # "10" is class 10, not the second folder
    assert {whole.path(i).split("/")[-2]: int(whole.y[i]) for i in range(len(whole))} == \
        {"0": 0, "1": 1, "2": 2, "10": 10}


def test_a_folder_data_classes_lacks_is_refused_showing_both_lists(tmp_path):
    root = _folders(tmp_path / "pics")
    with pytest.raises(KDistillError, match=r"class folder 'bag', not one of the classes \[Bag, Coat, Dress\] "
                                            r"\(its folders: \[bag, coat, dress\]\); add it to data.classes"):
        load_image_folder_source(root, _spec(root, classes=["Bag", "Coat", "Dress"]))


def test_an_unlabelled_folder_holds_transfer_images_and_an_empty_folder_is_refused(tmp_path):
    root = _folders(tmp_path / "pics")
    for i in range(3):
        _jpeg(root / "unlabelled" / f"{i}.jpg")
    train, _ = load_image_folder_source(root, _spec(root, files={"test": 3}))
    assert train.classes == ["bag", "coat", "dress"] and train.num_classes == 3
    assert int((train.base.y == -1).sum()) == 3  # label -1: transfer data only
    (root / "unlabelled").rename(root / "unlabeled")  # the American spelling too
    assert load_image_folder_source(root, _spec(root, files={"test": 3}))[0].num_classes == 3
    (root / "empty").mkdir()
    with pytest.raises(KDistillError, match=r"the class folder .*empty holds no images .* remove it"):
        load_image_folder_source(root, _spec(root))


def test_data_classes_is_checked_in_the_recipe():
    with pytest.raises(ValueError, match="more than once"):
        DataSpec(source="digits", classes=["a", "a"])
    with pytest.raises(ValueError, match="none empty"):
        DataSpec(source="digits", classes=[])
    assert DataSpec(source="digits", classes=[" a", "b"]).classes == ["a", "b"]


def test_data_classes_renumbers_a_sources_own_names_and_names_integer_labels():
    from kdistill.data.load import _check_labels
    from kdistill.recipe import load_recipe

    recipe = load_recipe({"data": {"source": "custom", "classes": ["dog", "cat", "emu"]}, "stages": [{"name": "s"}]})
    x = torch.zeros(3, 4)
    train, test = ArraySource(x, np.array(["dog", "cat", ""], dtype=object)), ArraySource(x, torch.tensor([0, 1, 2]))
    _check_labels(recipe, train, test)
    assert train.y.tolist() == [0, 1, -1] and train.classes == ["dog", "cat", "emu"]
    assert test.y.tolist() == [0, 1, 2] and train.num_classes == test.num_classes == 3
    with pytest.raises(KDistillError, match=r"data.classes: the training data's class 'owl' is not one of "
                                            r"\[dog, cat, emu\] \(the data's: \[cat, owl\]\)"):
        _check_labels(recipe, ArraySource(x, np.array(["cat", "owl", "cat"])), test)
    with pytest.raises(KDistillError, match=r"data.classes: names 3 classes but a test label is 3"):
        _check_labels(recipe, ArraySource(x, torch.tensor([0, 1, 2])), ArraySource(x, torch.tensor([0, 1, 3])))
