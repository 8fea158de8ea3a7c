"""Rows of a JSONL file (one JSON object a line), for the sources that read lists and columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from kdistill.errors import KDistillError


def jsonl_rows(lines: Iterable[str], path: Path, what: str) -> list[dict]:
    """The objects of ``lines`` (blank lines skipped); a line that is not a JSON object fails in
    one line naming ``path``, the line's number and ``what`` (the recipe's field)."""
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise KDistillError(f"{what}: {path} line {number} is not JSON ({err.msg}); "
                                "write one JSON object a line.") from None
        if not isinstance(row, dict):
            raise KDistillError(f"{what}: {path} line {number} holds a {type(row).__name__}, not an object; "
                                'write one JSON object a line, like {"text": "...", "label": "cat"}.')
        rows.append(row)
    return rows
