"""A model folder written whole or not at all (kdistill/models/folder.py)."""

import json

import pytest

from kdistill.errors import KDistillError
from kdistill.models.folder import staged_folder, write_sentence_transformer_modules


def test_a_staged_folder_replaces_the_old_one_only_when_the_block_ends(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KDistillError, match="not empty"):
        with staged_folder(out, overwrite=False):
            pass
    with pytest.raises(RuntimeError):
        with staged_folder(out, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (out / "old.txt").exists()  # nothing lost
    with staged_folder(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_sentence_transformer_modules_end_with_normalize_when_asked(tmp_path):
    write_sentence_transformer_modules(tmp_path, [(".", "StaticEmbedding")], normalize=True)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [(m["idx"], m["path"], m["type"].split(".")[-1]) for m in modules] == [
        (0, ".", "StaticEmbedding"), (1, "1_Normalize", "Normalize")]
    assert (tmp_path / "1_Normalize").is_dir()
    assert json.loads((tmp_path / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
