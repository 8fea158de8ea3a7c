"""The text sources' options, the texts each reads, and their one loader."""

import pytest

from kdistill.data.text_sources import CsvData, TextData, WordnetData, load_text_data
from kdistill.errors import KDistillError
from kdistill.recipe import DataSpec, load_recipe


def test_each_text_source_reads_its_own_texts(tmp_path):
    (tmp_path / "a.csv").write_text("t,l\nhello,x\nworld,y\n", encoding="utf8")
    (tmp_path / "a.txt").write_text("one\ntwo\n", encoding="utf8")
    csv = DataSpec(source="csv", path=str(tmp_path / "a.csv"), text={"text_column": "t", "label_column": "l"})
    assert isinstance(csv, CsvData) and csv.read_texts().texts == ["hello", "world"]
    plain = DataSpec(source="text", path=str(tmp_path / "a.txt"), text={"max_length": 16})
    assert type(plain) is TextData and plain.read_texts().texts == ["one", "two"] and plain.text_length() == 16
    assert isinstance(DataSpec(source="wordnet"), WordnetData)
    with pytest.raises(KDistillError, match="data.path: source 'text' needs the file to read"):
        DataSpec(source="text").read_texts()


def test_text_runs_embed_by_default_and_need_a_tokenizer(tmp_path):
    recipe = load_recipe({"data": {"source": "text", "path": "a.txt"}, "student": {"model": "mlp"},
                          "stages": [{"name": "s"}]})
    assert recipe.task == "embed"
    with pytest.raises(KDistillError, match="^data.text.tokenizer: text needs a tokenizer"):
        load_text_data(recipe.data, recipe)
