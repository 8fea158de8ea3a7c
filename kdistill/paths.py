"""Paths the user gives, checked before anything touches them."""

from __future__ import annotations

import os
from pathlib import Path

from kdistill.errors import KDistillError

NAME_MAX = 255  # bytes in one file name on the file systems we run on (ext4, xfs, apfs, ntfs)
PATH_MAX = 4096


def user_path(value: str | os.PathLike, what: str) -> Path:
    """``value`` as a Path, or a one-line error naming ``what`` when no file system could hold it
    (a NUL byte, a name over 255 bytes, a path over 4,096): ``Path.exists`` raises on those
    instead of answering."""
    try:
        text = os.fsdecode(os.fspath(value))
        os.fsencode(text)
    except (TypeError, UnicodeError):  # not a path at all, or characters no file name can hold
        raise KDistillError(f"{what}: {value!r:.60} is not a path this system can use; give a real path.") from None
    if "\0" in text:
        raise KDistillError(f"{what}: the path {text[:60]!r} holds a NUL byte; give a real path.")
    long = next((part for part in Path(text).parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None or len(os.fsencode(text)) > PATH_MAX:
        shown = (long or text)[:40]
        raise KDistillError(f"{what}: the path {shown!r}... is too long for a file system (names up to {NAME_MAX} "
                            f"bytes, paths up to {PATH_MAX}); give a shorter path.")
    return Path(text)
