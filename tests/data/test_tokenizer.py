"""Tokenizers by folder or model id, and how such a name resolves."""

import pytest

from kdistill.data.tokenizer import first_line, load_tokenizer, resolve_path
from kdistill.errors import KDistillError


def test_a_folder_resolves_to_itself_and_a_file_or_a_missing_path_is_one_line(tmp_path):
    assert resolve_path(str(tmp_path)) == str(tmp_path)
    (tmp_path / "config.json").write_text("{}", encoding="utf8")
    with pytest.raises(KDistillError, match=r"^tokenizer: .*config.json is a file; give the folder"):
        resolve_path(str(tmp_path / "config.json"), "tokenizer")
    with pytest.raises(KDistillError, match="folder ./absent does not exist"):
        resolve_path("./absent")
    assert resolve_path("namespace/model-id") == "namespace/model-id"  # a hub id: left to transformers


def test_first_line_of_an_error():
    assert first_line(OSError("no file\nmore lines")) == "no file"
    assert first_line(ValueError()) == "ValueError"


def test_the_tokenizer_of_a_folder_tokenises(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id


def test_a_folder_without_tokenizer_files_names_the_files_and_the_other_way(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}', encoding="utf8")  # a model folder, no tokenizer
    with pytest.raises(KDistillError) as err:
        load_tokenizer(str(tmp_path))
    message = str(err.value)
    assert message.startswith("tokenizer: cannot load") and "\n" not in message
    assert "tokenizer.json" in message and "data.lm.tokenizer" in message
