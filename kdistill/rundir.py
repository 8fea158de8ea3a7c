"""The run directory: written as ``<name>.incomplete`` and renamed when the run completes.

What kdistill owns, and so may write or remove, is ``runs_dir/<name>.incomplete`` and
``runs_dir/<name>`` when it carries the marker file kdistill writes into every run directory it
creates; nothing outside them is ever written or removed (the name is one folder name of
printable UTF-8). ``--overwrite`` removes only a folder with the marker, and a finished run is
moved into place only if ``<name>`` is still free then (or, with ``--overwrite``, a kdistill
run): otherwise it stays in ``<name>.incomplete`` for ``--resume`` to put in place later.

A run holds an exclusive OS lock (``flock``) on its marker file for its whole life, so a second
run of the same name (new or ``--resume``) is refused while the first lives; the kernel drops
the lock when the process dies (processes it forks, DataLoader workers, close their copy as they
start), so a killed run resumes at once. The runs folder itself is locked for the moment a run
creates, checks or publishes its directory. Every file is written through
:func:`kdistill.paths.open_own`: never through a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from pathlib import Path

from kdistill.train.checkpoint import has_checkpoint
from kdistill.errors import KDistillError
from kdistill.paths import INCOMPLETE, check_run_name, naming, no_links, no_links_under, open_own, user_path, write_own

try:
    import fcntl
except ImportError:  # Windows: runs are not locked against each other
    fcntl = None

MARKER = ".kdistill-run"  # written first into every run directory kdistill creates
# errors of a disk or folder that cannot take the run's files: a one-line error, the run kept
UNWRITABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder kdistill created as a run directory (it holds the marker),
    or an empty folder (a run killed before it wrote its marker: nothing to lose)."""
    return path.is_dir() and not path.is_symlink() and ((path / MARKER).is_file() or not any(path.iterdir()))


def check_written(run_dir: Path, what: str) -> Path:
    """``run_dir`` is a run directory kdistill wrote (it holds the marker file), so ``what`` (a
    command that writes into it) may write there."""
    if not (run_dir / MARKER).is_file() or (run_dir / MARKER).is_symlink():
        raise KDistillError(f"{what}: {run_dir} was not written by kdistill (no {MARKER} file in it), so {what} "
                            "writes nothing into it; give a run directory kdistill wrote.")
    return run_dir


def check_runs_dir(runs_dir: str | Path) -> Path:
    """``runs_dir`` is a folder we can write in, or can be created as one."""
    runs_dir = user_path(runs_dir, "--runs-dir")
    if runs_dir.exists() and not runs_dir.is_dir():
        raise KDistillError(f"--runs-dir: {runs_dir} is a file, not a folder; give a folder for the run directories.")
    existing = runs_dir
    while not existing.exists():  # the nearest folder that exists is where it will be created
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise KDistillError(f"--runs-dir: {existing} is not a writable folder; give a --runs-dir you can write to.")
    return runs_dir


def check_run_dir(runs_dir: str | Path, name: str, overwrite: bool) -> Path:
    """The final path of run ``name`` in ``runs_dir``, once it is safe to (over)write: an
    existing run is replaced only with ``overwrite`` and only if kdistill wrote it, and an
    unfinished run's checkpoints are never dropped without ``overwrite``."""
    final = check_runs_dir(runs_dir) / check_run_name(name)
    partial = final.with_name(final.name + INCOMPLETE)
    check_free(partial)
    if final.exists() or final.is_symlink():
        check_free(final)
        if not overwrite:
            raise KDistillError(f"run directory {final} already exists; choose another name (name=...) "
                                "or pass --overwrite.")
        if not is_run_dir(final):
            raise KDistillError(f"--overwrite: {final} was not written by kdistill (no {MARKER} file in it), so it is "
                                "left alone; move it away yourself or choose another name (name=...).")
    if partial.exists() or partial.is_symlink():
        if not is_run_dir(partial):
            raise KDistillError(f"run directory {partial} exists but was not written by kdistill (no {MARKER} file in "
                                "it), so it is left alone; move it away yourself or choose another name (name=...).")
        if has_checkpoint(partial / "checkpoints") and not overwrite:
            raise KDistillError(f"{partial} holds an unfinished run with checkpoints; continue it with "
                                f"`kdistill run --resume {partial}`, or start again with --overwrite "
                                "(which deletes them).")
    return final


def publish(path: Path, final: Path, overwrite: bool = False) -> None:
    """Move a finished ``<name>.incomplete`` into place as ``<name>``: refused in one line, the
    finished run left where it is, if ``<name>`` exists by then, unless ``overwrite`` is given
    and it is a kdistill run no other process holds (which it then replaces)."""
    with runs_folder_locked(final.parent):
        if final.exists() or final.is_symlink():
            how = (f"move {final} away, then `kdistill run --resume {path}` puts it in place"
                   if has_checkpoint(path / "checkpoints") else f"move {final} away, then rename {path} to {final}")
            if not overwrite:
                raise KDistillError(f"{final} exists (it appeared while the run was going), so the finished run was "
                                    f"not moved there; it is kept in {path}: {how}.")
            if not is_run_dir(final):
                raise KDistillError(f"--overwrite: {final} was not written by kdistill (no {MARKER} file in it), so it "
                                    f"is left alone; the finished run is kept in {path}: {how}.")
            check_free(final)
            shutil.rmtree(final)
        path.rename(final)


def unwritable(err: OSError) -> KDistillError | None:
    """The one-line error for a file the run could not write because its disk is full or its
    folder read-only (None for any other OSError, which stays a bug's traceback)."""
    if err.errno not in UNWRITABLE:
        return None
    where = err.filename or "a file of the run"
    fix = "free some space" if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) else \
        "make the folder writable"
    return KDistillError(f"could not write {where} ({err.strerror or os.strerror(err.errno)}); {fix}")


@contextlib.contextmanager
def runs_folder_locked(folder: Path):
    """An exclusive lock on the runs folder, for the moment a run creates or publishes its
    directory (no lock where the OS has no ``flock``)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


_HELD: set[int] = set()  # the descriptors of the markers this process holds locked


def _forget_in_child() -> None:
    """In a process forked from a run (a DataLoader worker): close the run's lock descriptors,
    so that the lock is the run's alone and dies with it (a flock belongs to the open file, which
    a fork shares; workers outliving a killed run would keep its name locked)."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _lock(folder: Path, create: bool) -> int:
    """A descriptor of ``folder``'s marker file holding an exclusive lock on it (the marker made
    when ``create``); refused in one line when another process holds it."""
    marker = no_links(folder / MARKER)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_EXCL if create else 0)
    try:
        fd = os.open(marker, flags, 0o666)
    except OSError as err:  # a folder or an unwritable file where the marker belongs
        raise KDistillError(f"{marker} cannot be opened to write ({err.strerror or type(err).__name__}); it is not "
                            "the marker file kdistill writes: remove it and run the command again.") from None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(folder) from None
    _HELD.add(fd)
    return fd


def _in_use(folder: Path) -> KDistillError:
    try:
        who = json.loads((folder / MARKER).read_text(encoding="utf8"))
        who = f"pid {int(who['pid'])}, started {str(who['started'])[:25]}"
    except (OSError, ValueError, KeyError, TypeError):
        who = "its process id unrecorded"
    return KDistillError(f"{folder} is in use by another kdistill run ({who}); wait for it to end (or stop it), "
                         "or choose another name (name=...).")


def check_free(folder: Path) -> None:
    """Refused in one line while another process's run holds ``folder`` (its marker locked)."""
    if fcntl is None or not (folder / MARKER).is_file() or (folder / MARKER).is_symlink():
        return
    try:
        fd = os.open(folder / MARKER, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(folder) from None
    finally:
        os.close(fd)


def _stamp(fd: int, folder: Path, name: str) -> None:
    """Write the marker's record through its locked descriptor: who runs it, since when."""
    record = {"kdistill": "run", "name": name, "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with naming(folder / MARKER):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf8"))


class RunDir:
    """Writes into ``<name>.incomplete`` and renames to ``<name>`` only when the run completes,
    so a crashed run is never passed off as complete and an existing run is never overwritten
    unless asked."""

    board = None  # a TensorBoard writer, once ``tensorboard()`` is called
    made: tuple[Path, ...] = ()  # the runs folders this run created (removed again if it is discarded)
    lock: int | None = None  # the descriptor of the marker file, locked for the life of the run
    overwrite = False  # whether publishing may replace a kdistill run at ``final``

    def __init__(self, runs_dir: str | Path, name: str, overwrite: bool):
        final = check_run_dir(runs_dir, name, overwrite)
        self.made = tuple(p for p in final.parents if not p.exists())
        final.parent.mkdir(parents=True, exist_ok=True)
        with runs_folder_locked(final.parent):  # no other run checks or creates this name meanwhile
            self.final = check_run_dir(runs_dir, name, overwrite)
            self.path, self.overwrite = self.final.with_name(self.final.name + INCOMPLETE), overwrite
            if self.path.exists():  # checked above: ours, no process holds it, no checkpoints or --overwrite
                shutil.rmtree(self.path)
            self.path.mkdir()
            self.lock = _lock(self.path, create=True)
        try:
            _stamp(self.lock, self.path, name)
            self.metrics = open_own(self.path / "metrics.jsonl", "a", self.path, encoding="utf8")
        except BaseException as err:  # a full disk already: nothing of the run is left
            shutil.rmtree(self.path, ignore_errors=True)
            self.release()
            if isinstance(err, OSError) and unwritable(err) is not None:
                raise unwritable(err) from None
            raise
        self.lines = 0

    @classmethod
    def reopen(cls, path: str | Path, lines: int, overwrite: bool = False) -> "RunDir":
        """An unfinished run directory, to resume: its metrics cut back to the first ``lines``
        records (those written before the checkpoint the run resumes from)."""
        out = cls.__new__(cls)
        out.path, out.overwrite = Path(path), overwrite
        out.final = out.path.with_name(out.path.name.removesuffix(INCOMPLETE))
        if (out.final.exists() or out.final.is_symlink()) and not (overwrite and is_run_dir(out.final)):
            raise KDistillError(f"resume: {out.final} exists; move it away to put the resumed run there (or pass "
                                "--overwrite to replace it, if it is a kdistill run).")
        with runs_folder_locked(out.path.parent):
            out.lock = _lock(out.path, create=False)  # refused while another process runs it
        try:
            no_links_under(out.path)  # every file the run writes is its own
            metrics = out.path / "metrics.jsonl"
            try:
                kept = metrics.read_text(encoding="utf8").splitlines()[:lines] if metrics.exists() else []
            except (OSError, UnicodeDecodeError) as err:
                raise KDistillError(f"resume: {metrics} cannot be read ({type(err).__name__}); it is not the metrics "
                                    "file the run wrote; start the run again (--overwrite).") from None
            _stamp(out.lock, out.path, out.final.name)
            out.metrics, out.lines = open_own(metrics, "w", out.path, encoding="utf8"), len(kept)
        except BaseException:
            out.release()
            raise
        out.metrics.write("".join(line + "\n" for line in kept))
        out.metrics.flush()
        return out

    def write(self, name: str, data: str | bytes) -> Path:
        """Write one file of the run (never through a link)."""
        return write_own(self.path / name, data, self.path)

    def release(self) -> None:
        """Drop the run's lock on its name (the kernel does so too when the process dies)."""
        if self.lock is not None:
            _HELD.discard(self.lock)
            os.close(self.lock)
            self.lock = None

    def discard(self) -> None:
        """Remove the run directory of a run stopped with no checkpoint to resume from, and the
        runs folders it created if they are left empty."""
        with contextlib.suppress(OSError):  # the disk that stopped the run may refuse the last flush too
            self.metrics.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()
        for folder in self.made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def log(self, record: dict) -> None:
        with naming(self.path / "metrics.jsonl"):
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        self.lines += 1
        if self.board is not None:
            self._to_tensorboard(record)

    def tensorboard(self) -> None:
        """Also write every record's numbers to TensorBoard, in ``<run>/tensorboard``."""
        folder = no_links(self.path / "tensorboard", self.path)
        self.board, self._epochs = tensorboard_writer()(str(folder)), {}

    def _to_tensorboard(self, record: dict) -> None:
        # one x axis across stages: epochs counted from the start of the run
        step = self._epochs.setdefault((record["stage"], record["epoch"]), len(self._epochs) + 1)
        for group in ("train", "val", "test"):
            for name, value in record.get(group, {}).items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(f"{record['stage']}/{group}/{name}", value, step)
        self.board.flush()

    def complete(self) -> Path:
        """Rename the finished run into place, then drop its checkpoints (until the rename, a
        kill or a refusal to publish leaves a run that ``--resume`` finishes without training
        again). The lock is held to the end: the rename keeps the marker's file."""
        try:
            self.metrics.close()
            if self.board is not None:
                self.board.close()
            publish(self.path, self.final, self.overwrite)
            shutil.rmtree(self.final / "checkpoints", ignore_errors=True)
        except OSError as err:  # a runs folder made read-only meanwhile: one line, the run kept
            if unwritable(err) is None:
                raise
            raise KDistillError(f"{unwritable(err)}; the finished run is kept in {self.path}: then "
                                f"`kdistill run --resume {self.path}` puts it in place") from None
        finally:
            self.release()
        return self.final


def tensorboard_writer():
    """TensorBoard's SummaryWriter class, or a one-line error if it is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise KDistillError("tensorboard: the package is not installed; pip install tensorboard, "
                            "or set tensorboard: false.") from None
    return SummaryWriter


class NullRunDir:
    """What ranks other than 0 write to in a distributed run: nothing."""

    path = None
    lines = 0

    def log(self, record: dict) -> None:
        self.lines += 1

    def release(self) -> None:
        pass

    @staticmethod
    def final_for(runs_dir: str | Path, name: str) -> Path:
        return Path(runs_dir) / name
