"""The run directory: written as ``<name>.incomplete`` and renamed when the run completes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kdistill.errors import KDistillError


def check_run_dir(runs_dir: str | Path, name: str, overwrite: bool) -> Path:
    final = Path(runs_dir) / name
    if final.exists() and not overwrite:
        raise KDistillError(
            f"run directory {final} already exists; choose another name (name=...) or pass --overwrite."
        )
    return final


class RunDir:
    """Writes into ``<name>.incomplete`` and renames to ``<name>`` only when the run completes,
    so a crashed run is never passed off as complete and an existing run is never overwritten
    unless asked."""

    board = None  # a TensorBoard writer, once ``tensorboard()`` is called

    def __init__(self, runs_dir: str | Path, name: str, overwrite: bool):
        self.final = check_run_dir(runs_dir, name, overwrite)
        self.path = self.final.with_name(self.final.name + ".incomplete")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self.metrics = (self.path / "metrics.jsonl").open("a")
        self.lines = 0

    @classmethod
    def reopen(cls, path: str | Path, lines: int) -> "RunDir":
        """An unfinished run directory, to resume: its metrics cut back to the first ``lines``
        records (those written before the checkpoint the run resumes from)."""
        out = cls.__new__(cls)
        out.path = Path(path)
        out.final = out.path.with_name(out.path.name.removesuffix(".incomplete"))
        if out.final.exists():
            raise KDistillError(f"resume: {out.final} exists already; that run finished.")
        metrics = out.path / "metrics.jsonl"
        kept = metrics.read_text().splitlines()[:lines] if metrics.exists() else []
        metrics.write_text("".join(line + "\n" for line in kept))
        out.metrics, out.lines = metrics.open("a"), len(kept)
        return out

    def log(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        self.lines += 1
        if self.board is not None:
            self._to_tensorboard(record)

    def tensorboard(self) -> None:
        """Also write every record's numbers to TensorBoard, in ``<run>/tensorboard``."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise KDistillError("tensorboard: the package is not installed; pip install tensorboard, "
                                "or set tensorboard: false.") from None
        self.board, self._epochs = SummaryWriter(str(self.path / "tensorboard")), {}

    def _to_tensorboard(self, record: dict) -> None:
        # one x axis across stages: epochs counted from the start of the run
        step = self._epochs.setdefault((record["stage"], record["epoch"]), len(self._epochs) + 1)
        for group in ("train", "val", "test"):
            for name, value in record.get(group, {}).items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(f"{record['stage']}/{group}/{name}", value, step)
        self.board.flush()

    def complete(self) -> Path:
        self.metrics.close()
        if self.board is not None:
            self.board.close()
        if self.final.exists():
            shutil.rmtree(self.final)
        self.path.rename(self.final)
        return self.final


class NullRunDir:
    """What ranks other than 0 write to in a distributed run: nothing."""

    path = None
    lines = 0

    def log(self, record: dict) -> None:
        self.lines += 1

    @staticmethod
    def final_for(runs_dir: str | Path, name: str) -> Path:
        return Path(runs_dir) / name
