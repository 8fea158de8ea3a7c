from collections import Counter
from pathlib import Path

import pytest

from kdistill.data.text import TextSet, load_csv, load_text_file, load_wordnet, split_gloss, split_texts
from kdistill.errors import KDistillError

FAKE_NOUNS = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n"
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to exist  \n"
    "00015388 05 n 01 animal 0 002 @ 00004475 n 0000 | a living organism; "
    '"animals move"; "the animal ran away"  \n'
    "07555863 13 n 01 food 0 001 @ 00021265 n 0000 | any substance eaten; usually by people  \n"
)


def _fake_wordnet(folder: Path) -> Path:
    (folder / "data.noun").write_text(FAKE_NOUNS)
    return folder


def test_wordnet_parser_on_a_fake_data_file(tmp_path):
    data = load_wordnet(_fake_wordnet(tmp_path))
    assert data.classes == ["noun.Tops", "noun.animal", "noun.food"]
    assert data.texts == [
        "that which is perceived to exist",
        "a living organism",
        "animals move",
        "the animal ran away",
        "any substance eaten; usually by people",
    ]
    assert data.labels == [0, 1, 1, 1, 2]
    definitions = load_wordnet(tmp_path, examples=False)
    assert definitions.texts == [data.texts[i] for i in (0, 1, 4)] and definitions.labels == [0, 1, 2]


def test_wordnet_reads_a_lexnames_file(tmp_path):
    _fake_wordnet(tmp_path)
    names = [f"{i:02d}\tfile{i}\t1" for i in range(45)]
    (tmp_path / "lexnames").write_text("\n".join(names) + "\n")
    assert load_wordnet(tmp_path).classes == ["file3", "file5", "file13"]


def test_split_gloss():
    assert split_gloss('a feat; "he rallied"; "a rally"') == ("a feat", ["he rallied", "a rally"])
    assert split_gloss("a report; as in a news report;") == ("a report; as in a news report", [])


def test_wordnet_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(KDistillError, match=r"no data\.noun.*apt-get install wordnet-base"):
        load_wordnet(tmp_path)
    _fake_wordnet(tmp_path)
    with pytest.raises(KDistillError, match=r"no data\.verb"):
        load_wordnet(tmp_path, pos=("noun", "verb"))
    with pytest.raises(KDistillError, match="data.pos: 'nouns'"):
        load_wordnet(tmp_path, pos="nouns")


def test_real_wordnet_nouns():
    if not Path("/usr/share/wordnet/data.noun").exists():
        pytest.skip("WordNet is not installed (sudo apt-get install wordnet-base)")
    nouns = load_wordnet(pos="noun", examples=False)
    assert len(nouns) == 82_115 and len(nouns.classes) == 26
    assert nouns.classes[0] == "noun.Tops" and nouns.classes[-1] == "noun.time"
    assert min(nouns.labels) == 0 and max(nouns.labels) == 25 and all(nouns.texts)


def test_text_file_skips_blank_lines(tmp_path):
    file = tmp_path / "sentences.txt"
    file.write_text("A cat sat.\n\n   \n  A dog ran.  \nThe end.")
    data = load_text_file(file)
    assert data.texts == ["A cat sat.", "A dog ran.", "The end."]
    assert data.labels == [-1, -1, -1] and data.classes == []
    with pytest.raises(KDistillError, match="not found"):
        load_text_file(tmp_path / "missing.txt")


def test_csv_labels_are_sorted_classes(tmp_path):
    file = tmp_path / "data.csv"
    file.write_text('text,label\n"Hello, world",b\nsecond,a\n,a\nno label,\nthird,b\n')
    data = load_csv(file)
    assert data.texts == ["Hello, world", "second", "no label", "third"]
    assert data.classes == ["a", "b"] and data.labels == [1, 0, -1, 1]
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("sentence,y\none,10\ntwo,2\n")
    data = load_csv(numbers, text_column="sentence", label_column="y")
    # integer labels are class ids (data/labels.py's one rule), the classes named by their number
    assert data.classes == [str(i) for i in range(11)] and data.labels == [10, 2]
    named = load_csv(file, classes=["b", "a"])  # data.classes fixes the order of the names
    assert named.classes == ["b", "a"] and named.labels == [0, 1, -1, 0]
    unlabelled = load_csv(numbers, text_column="sentence", label_column=None)
    assert unlabelled.labels == [-1, -1] and unlabelled.classes == []


def test_csv_missing_column_names_the_columns(tmp_path):
    file = tmp_path / "data.csv"
    file.write_text("sentence,category\nhi,a\n")
    with pytest.raises(KDistillError, match=r"^data\.text\.text_column: .*no column 'text'.*'sentence', 'category': "
                                            r"set data\.text\.text_column to one of them\.$"):
        load_csv(file)
    # the recipe's field and YAML's null, not Python's None
    with pytest.raises(KDistillError, match=r"^data\.text\.label_column: .*no column 'label'.*"
                                            r"set data\.text\.label_column: null for unlabelled texts\.$") as err:
        load_csv(file, text_column="sentence")
    assert "None" not in str(err.value)


def _labelled(n_per_class=(60, 30, 10)):
    labels = [c for c, n in enumerate(n_per_class) for _ in range(n)]
    return TextSet([f"text {i}" for i in range(len(labels))], labels, ["a", "b", "c"])


def test_split_sizes_stratified_and_disjoint():
    data = _labelled()
    train, test = split_texts(data, 0.2, seed=0)
    assert len(train) == 80 and len(test) == 20
    assert Counter(test.labels) == {0: 12, 1: 6, 2: 2}
    assert not set(train.texts) & set(test.texts)
    assert set(train.texts) | set(test.texts) == set(data.texts)
    assert train.classes == test.classes == ["a", "b", "c"]
    assert len(split_texts(data, 7, seed=0)[1]) == 7


def test_split_is_seeded():
    data = _labelled()
    assert split_texts(data, 25, seed=1) == split_texts(data, 25, seed=1)
    assert split_texts(data, 25, seed=1)[1].texts != split_texts(data, 25, seed=2)[1].texts


def test_split_unlabelled_and_bad_sizes():
    data = TextSet([str(i) for i in range(10)], [-1] * 10, [])
    train, test = split_texts(data, 0.3, seed=0)
    assert len(train) == 7 and len(test) == 3 and test.labels == [-1] * 3
    for bad in (0, 10, 1.0, 0.0, True):
        with pytest.raises(KDistillError, match="data.test"):
            split_texts(data, bad, seed=0)


def test_textset_checks_labels():
    with pytest.raises(KDistillError, match="2 texts but 1 labels"):
        TextSet(["a", "b"], [0], ["x"])
    with pytest.raises(KDistillError, match="label 3 is outside"):
        TextSet(["a"], [3], ["x"])
    assert TextSet(["a", "b", "c"], [0, -1, 1], ["x", "y"]).subset([2, 0]).texts == ["c", "a"]
