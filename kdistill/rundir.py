"""The run directory: written as ``<name>.incomplete`` and renamed when the run completes.

Nothing outside ``runs_dir/<name>`` (and its ``.incomplete`` twin) is ever written or removed:
the name is one path component, and ``--overwrite`` removes only a folder that carries the
marker file kdistill writes into every run directory it creates.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kdistill.train.checkpoint import has_checkpoint
from kdistill.errors import KDistillError, shown
from kdistill.paths import user_path

MARKER = ".kdistill-run"  # written first into every run directory kdistill creates
INCOMPLETE = ".incomplete"


def check_run_name(name: str) -> str:
    """A run name is one folder name: no separators, not empty, not ``.`` or ``..``."""
    bad = (not isinstance(name, str) or name.strip() in ("", ".", "..") or "/" in name or "\\" in name
           or "\0" in name or (os.altsep and os.altsep in name) or name != name.strip()
           or len(os.fsencode(name)) > 200)  # room for ".incomplete" within a 255-byte file name
    if bad:
        raise KDistillError(f"name: {shown(name)} is not a run name; give one folder name without '/', e.g. "
                            "name=my-run (runs are written to RUNS_DIR/<name>).")
    if name.endswith(INCOMPLETE):
        raise KDistillError(f"name: {shown(name)} ends in {INCOMPLETE!r}, which marks unfinished runs; "
                            "choose another name.")
    return name


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder kdistill created as a run directory (it holds the marker),
    or an empty folder (a run killed before it wrote its marker: nothing to lose)."""
    return path.is_dir() and not path.is_symlink() and ((path / MARKER).is_file() or not any(path.iterdir()))


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
    if final.exists() or final.is_symlink():
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


def publish(path: Path, final: Path) -> None:
    """Move a finished ``<name>.incomplete`` into place as ``<name>`` (replacing an older run)."""
    if final.exists():
        shutil.rmtree(final)
    path.rename(final)


class RunDir:
    """Writes into ``<name>.incomplete`` and renames to ``<name>`` only when the run completes,
    so a crashed run is never passed off as complete and an existing run is never overwritten
    unless asked."""

    board = None  # a TensorBoard writer, once ``tensorboard()`` is called
    made: tuple[Path, ...] = ()  # the runs folders this run created (removed again if it is discarded)

    def __init__(self, runs_dir: str | Path, name: str, overwrite: bool):
        self.final = check_run_dir(runs_dir, name, overwrite)
        self.path = self.final.with_name(self.final.name + INCOMPLETE)
        if self.path.exists():  # checked above: ours, and without checkpoints or with --overwrite
            shutil.rmtree(self.path)
        self.made = tuple(p for p in self.final.parents if not p.exists())
        self.path.mkdir(parents=True)
        (self.path / MARKER).write_text(json.dumps({"kdistill": "run", "name": name}) + "\n", encoding="utf8")
        self.metrics = (self.path / "metrics.jsonl").open("a", encoding="utf8")
        self.lines = 0

    @classmethod
    def reopen(cls, path: str | Path, lines: int) -> "RunDir":
        """An unfinished run directory, to resume: its metrics cut back to the first ``lines``
        records (those written before the checkpoint the run resumes from)."""
        out = cls.__new__(cls)
        out.path = Path(path)
        out.final = out.path.with_name(out.path.name.removesuffix(INCOMPLETE))
        if out.final.exists():
            raise KDistillError(f"resume: {out.final} exists already; that run finished.")
        metrics = out.path / "metrics.jsonl"
        try:
            kept = metrics.read_text(encoding="utf8").splitlines()[:lines] if metrics.exists() else []
        except (OSError, UnicodeDecodeError) as err:
            raise KDistillError(f"resume: {metrics} cannot be read ({type(err).__name__}); it is not the metrics "
                                "file the run wrote; start the run again (--overwrite).") from None
        metrics.write_text("".join(line + "\n" for line in kept), encoding="utf8")
        out.metrics, out.lines = metrics.open("a", encoding="utf8"), len(kept)
        return out

    def discard(self) -> None:
        """Remove the run directory of a run stopped with no checkpoint to resume from, and the
        runs folders it created if they are left empty."""
        self.metrics.close()
        shutil.rmtree(self.path, ignore_errors=True)
        for folder in self.made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def log(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        self.lines += 1
        if self.board is not None:
            self._to_tensorboard(record)

    def tensorboard(self) -> None:
        """Also write every record's numbers to TensorBoard, in ``<run>/tensorboard``."""
        self.board, self._epochs = tensorboard_writer()(str(self.path / "tensorboard")), {}

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
        kill leaves a run that ``--resume`` finishes without training again)."""
        self.metrics.close()
        if self.board is not None:
            self.board.close()
        publish(self.path, self.final)
        shutil.rmtree(self.final / "checkpoints", ignore_errors=True)
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

    @staticmethod
    def final_for(runs_dir: str | Path, name: str) -> Path:
        return Path(runs_dir) / name
