"""Paths the user gives, checked before anything touches them."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
from pathlib import Path

from kdistill.errors import KDistillError, shown

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
        start = (long or text)[:40]
        raise KDistillError(f"{what}: the path {start!r}... is too long for a file system (names up to {NAME_MAX} "
                            f"bytes, paths up to {PATH_MAX}); give a shorter path.")
    return Path(text)


def _link_error(path: Path, kind: str = "a symbolic link") -> KDistillError:
    return KDistillError(f"{path} is {kind}; kdistill writes only files it created itself, never through a link: "
                         "remove the link (or move it away) and run the command again.")


def no_links(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``path``, refused in one line if it, or a folder between ``root`` and it, is a symbolic
    link: kdistill writes into the folders it owns (a run directory, an export folder) only, and
    a link planted there would have it write, truncate or delete files elsewhere."""
    path = Path(path)
    chain = [path]
    if root is not None and path != Path(root) and Path(root) in path.parents:
        parts = path.relative_to(root).parts
        chain = [Path(root).joinpath(*parts[: i + 1]) for i in range(len(parts))]
    for step in chain:
        if step.is_symlink():
            raise _link_error(step)
    return path


def no_links_under(folder: str | os.PathLike) -> Path:
    """``folder``, refused in one line if anything in it (at any depth) is a symbolic link."""
    folder = Path(folder)
    for step in [folder, *folder.rglob("*")]:  # rglob does not descend into linked folders
        if step.is_symlink():
            raise _link_error(step)
    return folder


_FLAGS = {"w": os.O_WRONLY | os.O_CREAT, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}


def open_own(path: str | os.PathLike, mode: str = "w", root: str | os.PathLike | None = None, encoding=None):
    """Open a file kdistill writes (modes ``w`` or ``a``, text or with ``b``) without
    following a symbolic link: the file itself (``O_NOFOLLOW``) and every folder between ``root``
    and it are checked (:func:`no_links`), and a file with other names (a hard link) is refused
    before it is truncated. The one way kdistill opens a file it writes."""
    path = no_links(path, root)
    flags = _FLAGS[mode.replace("b", "")] | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:  # a link made since the check above
            raise _link_error(path) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            raise _link_error(path, "a hard link (one file under several names)")
        if mode.startswith("w") and stat.S_ISREG(info.st_mode):
            os.ftruncate(fd, 0)
        return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding or "utf8")
    except BaseException:
        os.close(fd)
        raise


def write_own(path: str | os.PathLike, data: str | bytes, root: str | os.PathLike | None = None) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through :func:`open_own`."""
    with naming(path), open_own(path, "wb" if isinstance(data, bytes) else "w", root, encoding="utf8") as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def naming(path: str | os.PathLike):
    """An OSError raised inside that names no file (a write through an open file: a full disk)
    is given ``path``, so that its one-line message says which file could not be written."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


INCOMPLETE = ".incomplete"  # the suffix of a run directory not yet complete


def check_run_name(name: str) -> str:
    """A run name is one folder name: no separators, not empty, not ``.`` or ``..``, printable
    characters that UTF-8 can write (the weight files' metadata and the summary hold it)."""
    if isinstance(name, str) and (not _utf8(name) or any(unicodedata.category(c) == "Cc" for c in name)):
        raise KDistillError(f"name: {shown(name)} holds a control character or bytes that are not UTF-8 text; "
                            "give a name of printable characters, e.g. name=my-run.")
    bad = (not isinstance(name, str) or name.strip() in ("", ".", "..") or "/" in name or "\\" in name
           or "\0" in name or (os.altsep and os.altsep in name) or name != name.strip()
           or len(os.fsencode(name)) > 200)  # room for ".incomplete" within a 255-byte file name
    if bad:
        raise KDistillError(f"name: {shown(name)} is not a run name; give one folder name without '/', e.g. "
                            "name=my-run (runs are written to RUNS_DIR/<name>).")
    if name.endswith(INCOMPLETE):
        raise KDistillError(f"name: {shown(name)} ends in {shown(INCOMPLETE)}, which marks unfinished runs; "
                            "choose another name.")
    return name


def _utf8(text: str) -> bool:
    try:
        text.encode("utf8")
    except UnicodeEncodeError:  # a lone surrogate: a byte from the command line that is not UTF-8
        return False
    return True
