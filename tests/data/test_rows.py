"""JSONL rows (kdistill/data/rows.py)."""

from pathlib import Path

import pytest

from kdistill.data.rows import jsonl_rows
from kdistill.errors import KDistillError


def test_objects_read_blank_lines_skipped():
    lines = ['{"text": "a", "label": 1}\n', "\n", '{"text": "b"}\n']
    assert jsonl_rows(lines, Path("x.jsonl"), "data.path") == [{"text": "a", "label": 1}, {"text": "b"}]


@pytest.mark.parametrize("line, words", [("{not json", "line 2 is not JSON"), ("[1, 2]", "holds a list")])
def test_a_bad_line_is_named(line, words):
    with pytest.raises(KDistillError, match=words) as err:
        jsonl_rows(['{"a": 1}', line], Path("x.jsonl"), "data.files")
    assert str(err.value).startswith("data.files: x.jsonl") and "\n" not in str(err.value)
