"""Property-based test of the ``kdistill`` command line (issue 13: no input gives a traceback).

The contract under test: every failure caused by the user's input ends in ONE line on stderr,
``error: <message>``, with exit code 2, and leaves no trace on disk; success is exit 0; a bug
of kdistill's own exits 1 with a traceback, which is what this test is here to catch. A run
directory ``RUNS/<name>`` is written as ``RUNS/<name>.incomplete`` and renamed when complete;
the only trace an exit 2 may leave is a resumable ``<name>.incomplete`` (it holds a checkpoint
and the message says ``kdistill run --resume``) after a run stopped during training (a signal, a
loss that became NaN).

How it works
------------
Once a session, a few small valid recipes (scikit-learn ``digits``, MLP teacher and student,
one epoch, ``latency: false``; variants: a kd stage on ``transfer``, a ``baseline`` stage, a
``hint`` term on ``stages.0``, a CNN student, a teacher-only run, a run whose teacher loads the
``weights:`` the teacher-only run wrote, and a run stopped after its first epoch, left as a
resumable ``stopped.incomplete``) are run with the real CLI into a template sandbox. Every
example copies that template into a fresh folder, breaks ONE thing (drawn by hypothesis), hashes
every file and folder, runs ``kdistill.cli.main()`` IN PROCESS (``sys.argv`` set, stdout and
stderr redirected, the working directory the sandbox, ``--runs-dir`` inside it), hashes again
and checks:

* the exit code is 0 or 2, never 1, and nothing but ``SystemExit`` escapes ``main()``;
* on exit 2: stderr's last non-empty line is the only ``error: `` line, the message is one
  line, and ``Traceback`` appears nowhere; nothing in the sandbox changed (no new, changed or
  removed file or folder), except the resumable ``.incomplete`` of a stopped run;
* on exit 0: changes only inside what the command writes (``RUNS/<name>`` for ``run``, the
  export folder for ``export``, the run directories (and ``--out``) for ``report``, nothing for
  ``eval``), and no ``.incomplete`` left behind.

The families of broken input (one test each): a recipe field (a value of a wrong type, out of
range, NaN/inf, empty, path-like, huge; a deleted key; an unknown key; a schema key the recipe
did not give), a ``key=value`` override, a path (the recipe file, ``--runs-dir``, a weights file
the recipe points to), ``run --resume`` on various folders, and ``eval`` / ``export`` /
``report`` on a finished run with one of its files damaged. Absolute paths in the drawn values
are rewritten to a folder next to the sandbox (``outside/``), which is hashed too, so nothing
outside the test's tmp folder is ever written, whatever kdistill does with them. Values known
to hurt the test process itself (a huge ``threads``, which segfaults torch; huge model widths
or epochs) are not drawn in process; ``test_unsafe_values_in_a_subprocess`` runs those. The
cases issue 13 names (a binary recipe, ``labelled: 0`` with a labelled stage, a student whose
input size is not the data's, a runs path that is a file, a damaged ``predictions.safetensors``
given to ``report``, a NaN loss weight, ``name: ..`` with ``--overwrite``, ...) run every time
as ``test_cli_known_case``, whatever hypothesis draws.

Issue 29 added six families, each with the checks above and a rule of its own where the
contract says more:

* ``symlink``: a finished run's report.md / report.html / metrics.jsonl / summary.json /
  student.safetensors / plots / export, or the stopped run's metrics.jsonl / checkpoints, made a
  link into ``outside/`` (its file, a copy of what was there, a folder, a dangling name), then
  ``report`` / ``export`` / ``eval`` / ``run --resume``: nothing outside may change (exit 2 is
  the expected answer; exit 0 only if nothing outside changed);
* ``cache``: the template's run ``cached`` (a cache stage, its teacher outputs in ``cache/``) with
  a shard zeroed past its header, bytes flipped, truncated or deleted, or ``meta.json`` damaged,
  then ``run`` / ``cache`` / ``cache --verify``: a ``run`` or ``--verify`` that exits 0 must have
  rebuilt (or removed) the damaged file, not used it (``Case.refuse_damaged``);
* ``checkpoint``: every checkpoint of ``stopped.incomplete`` with bytes of its tensor data
  flipped, truncated or zeroed: ``--resume`` must refuse (``Case.must_refuse``);
* ``huge``: an alias bomb (3, 5 or 9 levels of ``&b [*a, *a, ...]``), a string or list of up to
  900,000 characters, 3000 levels of nesting, a 5000-digit integer or a file over 1 MB, in the
  recipe or as an override: the error line at most 600 characters, the call at most 30 s;
* ``labels``: nan, inf, 1.5, 'cat', 1e9, 2**62, -5, 10, True in one row or every row of an
  ``npy`` label file (train or test) or an ``image_folder`` CSV list, run under a cap on the
  address space (4 GiB above what the process holds), so a label that sizes a 32 GB layer
  fails at once (as a crash, exit 1) instead of taking the machine;
* ``disk_full``: ``run`` / ``report`` / ``export`` / ``run --resume`` with the folder they write
  on a small tmpfs (16 to 400 KB free; only where this process may mount one: root) or with every
  write to one file (summary.json, report.md, a checkpoint, ...) failing with ENOSPC through a
  patched ``open`` / ``torch.save``.

``test_two_runs_of_one_name_at_once`` (a plain test, two subprocesses) starts two
``run kd.yaml --overwrite`` together: exactly one runs, the other exits 2 naming the run.

In CI mode matplotlib's ``Figure.savefig`` writes a 1x1 PNG instead of rasterising (the figures
are still built from the run's data): it halves the cost of every run that gets to its report.

Every exit-2 case records where its ``KDistillError`` was raised (the file:function of the
innermost frame of the first error in its chain, found by wrapping ``kdistill.cli.app``, so
``main()`` itself runs unchanged) and the message's prefix; the table of sites and counts is
printed at the end of the session (``pytest -s`` shows it) and, when ``KDISTILL_FUZZ_REPORT``
names a folder, written to ``fuzz-sites.txt`` there.

Modes
-----
* CI (default): derandomised, a fixed number of examples per family (``CI_EXAMPLES``, about 380
  cases); the file took about 45 s on 2 cores when nothing failed, before issue 29's families
  (about 30 cases, a cached run in the template and the two-process test) were added. A failure costs more
  (hypothesis shrinks it and keeps looking for other bugs a while): about 70 s with the bugs
  of the day it was written. ``pytest tests/test_cli_fuzz.py [-s]``
* Long: ``KDISTILL_FUZZ_MINUTES=10 pytest tests/test_cli_fuzz.py -s``: random (not
  derandomised), runs rounds of 20 examples of each family in turn until that many minutes
  have passed (checked between rounds, so the last round and its shrinking may overrun), keeps
  going after a failure, then prints how many cases it tried, the site counts and every
  distinct failure with its reproduction (also to ``fuzz-failures.txt`` with
  ``KDISTILL_FUZZ_REPORT``), and fails if there was any. The ``test_cli_<family>`` tests are
  skipped in this mode; ``-k test_long`` runs it alone.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import kdistill
import kdistill.cli as cli
from kdistill.errors import KDistillError

MINUTES = float(os.environ.get("KDISTILL_FUZZ_MINUTES") or 0)
LONG = MINUTES > 0
REPORT_DIR = os.environ.get("KDISTILL_FUZZ_REPORT")
ROOT = os.geteuid() == 0  # chmod does not stop root from writing: unwritable-folder cases are skipped
CALL_TIMEOUT = 120  # seconds one CLI call may take before it counts as a hang
PACKAGE_ROOT = Path(kdistill.__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- the valid baselines

DATA = {"source": "digits", "labelled": 100}
MLP_T = {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}
MLP_S = {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}}
CNN_S = {"model": "cnn", "args": {"channels": [4], "image_size": 8}}
KD = {"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}


def _recipe(name, stages, teacher=MLP_T, student=MLP_S):
    tree = {"name": name, "latency": False, "data": DATA, "teacher": teacher}
    if student is not None:
        tree["student"] = student
    tree["stages"] = stages
    return copy.deepcopy(tree)


# the order matters: 'fromw' loads the teacher weights 'teach' wrote
BASELINES = {
    "kd": _recipe("kd", [KD]),
    "base": _recipe("base", [{"name": "baseline", "train": "baseline", "data": "labelled", "epochs": 1}, KD]),
    "hint": _recipe("hint", [{**KD, "loss": [{"loss": "kd"}, {"loss": "hint", "weight": 0.5, "student": "stages.0",
                                                                 "teacher": "stages.0"}]}]),
    "cnn": _recipe("cnn", [KD], student=CNN_S),
    "teach": _recipe("teach", [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1}], student=None),
    "fromw": _recipe("fromw", [KD], teacher={**MLP_T, "weights": "teacher.safetensors"}),
}
STOPPED = _recipe("stopped", [{**KD, "epochs": 2}])  # stopped after epoch 1: a resumable .incomplete

ABS = "@ABS@"  # in drawn values: an absolute path, rewritten to <example>/outside/abs

# ----------------------------------------------------------------------------- session-wide record

SITES: Counter = Counter()  # (site, message prefix) -> exit-2 cases
EXAMPLE_MESSAGE: dict = {}  # (site, prefix) -> one message
OUTCOMES: Counter = Counter()  # "exit 0", "exit 2", "failure"
BY_FAMILY: dict = {}  # family -> Counter of "exit 0", "exit 2", "failure"
FAILURES: dict = {}  # long mode: signature -> [count, report]
SLOWEST: list = []  # (seconds, case) of the slowest calls
STARTED = time.monotonic()


# ----------------------------------------------------------------------------- running the CLI


# the smallest PNG: what a figure is "saved" as in CI mode
TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                         "1f15c4890000000d49444154789c63f8ffff3f0005fe02fea7d6a4ad0000000049454e44ae426082")


def fake_savefig(self, fname, *args, **kwargs):
    """Figure.savefig without the rasterising (about a second a run): every figure is still
    built from the run's data, only the pixels are not drawn."""
    if hasattr(fname, "write"):
        fname.write(TINY_PNG)
    else:
        Path(fname).write_bytes(TINY_PNG)


class CallTimeout(BaseException):
    """A CLI call ran past CALL_TIMEOUT (a BaseException: no ``except Exception`` swallows it)."""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    error: KDistillError | None = None  # the KDistillError main() turned into exit 2
    crash: BaseException | None = None  # anything else that escaped main()
    seconds: float = 0.0


def invoke(argv: list[str], cwd: Path, timeout: float = CALL_TIMEOUT) -> Outcome:
    """``kdistill ARGV`` in this process, in ``cwd``: exit code, output, and the error behind it."""
    seen: dict = {}
    real_app = cli.app

    def spy(*args, **kwargs):
        try:
            return real_app(*args, **kwargs)
        except KDistillError as err:
            seen["error"] = err
            raise

    def on_alarm(*_):
        raise CallTimeout(f"kdistill {' '.join(argv)} took more than {timeout:.0f} s")

    out, err = io.StringIO(), io.StringIO()
    old = (sys.argv, os.getcwd(), torch.get_num_threads(), signal.signal(signal.SIGALRM, on_alarm))
    crash, code = None, 0
    started = time.perf_counter()
    patcher = pytest.MonkeyPatch()
    try:
        if not LONG:  # only while the CLI runs: other test modules draw their figures for real
            from matplotlib.figure import Figure

            patcher.setattr(Figure, "savefig", fake_savefig)
        sys.argv = ["kdistill", *argv]
        os.chdir(cwd)
        cli.app = spy
        signal.setitimer(signal.ITIMER_REAL, timeout)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001  (what the test is for: anything but SystemExit)
        crash, code = exc, 1
    finally:
        patcher.undo()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old[3])
        cli.app = real_app
        sys.argv = old[0]
        os.chdir(old[1])
        torch.set_num_threads(old[2])
    return Outcome(code, out.getvalue(), err.getvalue(), seen.get("error"), crash, time.perf_counter() - started)


def _relative(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(PACKAGE_ROOT))
    except ValueError:
        parts = Path(filename).parts
        return "/".join(parts[-3:])


def origin(exc: BaseException) -> BaseException:
    """The first KDistillError of the chain behind a KDistillError (one re-raised with more
    words keeps the site of the first)."""
    first, seen = exc, {id(exc)}
    while isinstance(first.__context__, KDistillError) and id(first.__context__) not in seen:
        first = first.__context__
        seen.add(id(first))
    return first


def site_of(exc: BaseException) -> str:
    """``file:function:line`` of the innermost frame of ``exc``'s traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{_relative(frame.filename)}:{frame.name}:{frame.lineno}"


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------- the disk


def snapshot(root: Path) -> dict[str, str]:
    """Every file (its hash), folder and link under ``root``, by absolute path."""
    state = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs:
            path = os.path.join(folder, name)
            state[path] = f"<link {os.readlink(path)}>" if os.path.islink(path) else "<dir>"
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                state[path] = f"<link {os.readlink(path)}>"
                continue
            try:
                with open(path, "rb") as f:
                    state[path] = hashlib.sha1(f.read()).hexdigest()
            except OSError as err:
                state[path] = f"<unreadable {err.errno}>"
    return state


def changes(before: dict, after: dict) -> list[tuple[str, str]]:
    out = []
    for path in sorted(set(before) | set(after)):
        if path not in after:
            out.append(("removed", path))
        elif path not in before:
            out.append(("created", path))
        elif before[path] != after[path]:
            out.append(("changed", path))
    return out


def inside(path: str, region: str) -> bool:
    return path == region or path.startswith(region.rstrip(os.sep) + os.sep)


def resumable(folder: Path) -> bool:
    return (folder / "recipe.yaml").is_file() and any((folder / "checkpoints").glob("ckpt-*.pt"))


# ----------------------------------------------------------------------------- values to break things with

WRONG_TYPES = [None, True, False, "text", "", [], {}, [1, "x"], {"zz": 1}, [[]]]
SMALL_NUMBERS = [0, -1, 1, 2, 0.5, 1.5, -0.5, 1e-300, float("nan"), float("inf"), float("-inf")]
HUGE = [10**30, -10**30, 2**63, 2**31, 1e308, 10**6]
PATHLIKE = ["..", ".", ABS, "a/b", "../escape", "~", "x" * 300, "nul\0byte", " ", "-rf", "é", "C:\\x", "kd "]
DOMAIN = ["labelled", "transfer", "labelled+transfer", "full", "teacher", "baseline", "student", "stages.0",
          "stages.9", "stages", "head", "logits", "weights", "embedding", "mlp", "cnn", "resnet", "hf",
          "os:system", "nosuch.module:thing", "kd", "hint", "ce", "dkd", "nosuch", "auto", "cpu", "mps", "cuda",
          "cuda:7", "embed", "classify", "fashion_mnist", "custom", "wordnet", "csv", "digits", "adam", "cosine",
          "step", "bf16", "fp16", "float16", "even", "teacher.safetensors", "files/random.safetensors"]
DOMAIN_OBJECTS = [{"loss": "kd"}, {"loss": "hint", "student": "stages.0", "teacher": "stages.0"}, {"loss": "nosuch"},
                  [{"loss": "kd", "weight": 0}], {"model": "mlp"}, {"model": "cnn", "args": {"image_size": 8}},
                  {"name": "s2", "epochs": 1}, [{"name": "a"}], {"keep": [0]}, {"source": "digits"},
                  {"teacher": "stages.0", "student": "stages.0"}, {"shift": 1}, {"dir": ABS}]
UNKNOWN_KEYS = ["epocs", "zzz", "Name", "", "stage", "loss_weight", "tempreature", "0", "weights "]

# keys whose values size the work or the memory of the test process itself: no huge numbers there
UNSAFE_KEYS = {"epochs", "threads", "hidden", "channels", "image_size", "in_features", "num_classes",
               "convs_per_stage", "pool_stages", "widths", "blocks_per_stage", "max_samples", "dim", "views",
               "max_length", "shift", "in_channels", "layers", "heads", "ffn", "keep", "batch_size"}
# keys where even moderate numbers are too slow (epochs: 1000 would train for minutes)
SLOW_KEYS = {"epochs"}
# valid values that are merely slow: torch.compile with inductor builds C++ for a minute
SLOW_VALUES = {"compile": (True, 1, 1.0, "inductor")}

# schema keys a recipe need not give (and the base recipes don't): set to a drawn value
EXTRA_PATHS = [
    ("seed",), ("device",), ("threads",), ("task",), ("tensorboard",), ("embedding",), ("teachers",),
    ("checkpoint", "enabled"), ("checkpoint", "every"), ("checkpoint", "keep"), ("checkpoint",),
    ("data", "val"), ("data", "transfer"), ("data", "normalize"), ("data", "split_seed"), ("data", "path"),
    ("data", "text"), ("data", "text", "max_length"),
    ("stages", 0, "train"), ("stages", 0, "batch_size"), ("stages", 0, "grad_clip"), ("stages", 0, "amp"),
    ("stages", 0, "init_from"), ("stages", 0, "cache_teacher"), ("stages", 0, "cache"), ("stages", 0, "compile"),
    ("stages", 0, "channels_last"), ("stages", 0, "eval_every"), ("stages", 0, "augment"),
    ("stages", 0, "augment", "shift"), ("stages", 0, "augment", "flip"),
    ("stages", 0, "optimizer", "name"), ("stages", 0, "optimizer", "lr"), ("stages", 0, "optimizer", "momentum"),
    ("stages", 0, "optimizer", "weight_decay"), ("stages", 0, "schedule", "name"),
    ("stages", 0, "schedule", "warmup_epochs"), ("stages", 0, "schedule", "step_size"),
    ("stages", 0, "schedule", "gamma"),
    ("stages", 0, "loss", 0, "weight"), ("stages", 0, "loss", 0, "name"), ("stages", 0, "loss", 0, "student"),
    ("stages", 0, "loss", 0, "teacher"), ("stages", 0, "loss", 0, "args", "temperature"),
    ("stages", 0, "loss", 0, "args", "alpha"), ("stages", 0, "loss", 0, "args", "nosuch"),
    ("teacher", "weights"), ("student", "weights"), ("student", "from_teacher"),
    ("student", "args", "num_classes"), ("student", "args", "dropout"), ("teacher", "args", "num_classes"),
    ("student", "args", "in_channels"), ("student", "args", "pool_stages"), ("student", "args", "convs_per_stage"),
]


def values_for(path: tuple) -> list:
    """The pool of values drawn for ``path``: no huge numbers where they would size the work."""
    keys = {p for p in path if isinstance(p, str)}
    unsafe = bool(keys & UNSAFE_KEYS) or (path[:1] in (("teacher",), ("student",), ("teachers",)) and "args" in keys)
    pool = WRONG_TYPES + PATHLIKE + DOMAIN + DOMAIN_OBJECTS
    if keys & SLOW_KEYS:
        pool += [n for n in SMALL_NUMBERS if not (isinstance(n, (int, float)) and math.isfinite(n) and n > 2)]
    else:
        pool += SMALL_NUMBERS + [3, 7, 64, 100]
    if not unsafe:
        pool += HUGE
    for key in keys & set(SLOW_VALUES):
        pool = [v for v in pool if not any(type(v) is type(s) and v == s for s in SLOW_VALUES[key])]
    return pool


def all_paths(tree, prefix=()):
    """Every path to a node of a recipe tree (not the root)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from all_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield (*prefix, i)
            yield from all_paths(value, (*prefix, i))


def node(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def present(tree, path) -> bool:
    try:
        node(tree, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@st.composite
def mutations(draw, tree: dict):
    """One change to a recipe tree: (description, function applying it to a copy)."""
    existing = list(all_paths(tree))
    extra = [p for p in EXTRA_PATHS if not present(tree, p) and present(tree, p[:-1])
             and isinstance(node(tree, p[:-1]), dict)]
    kind = draw(st.sampled_from(["replace", "delete", "add unknown key", "set absent key"]), label="kind")
    if kind == "replace":
        path = draw(st.sampled_from(existing), label="path")
        value = draw(st.sampled_from(values_for(path)), label="value")
        return f"{'.'.join(map(str, path))}: replaced by {show(value)}", ("set", path, value)
    if kind == "delete":  # a key of a section, or an item of a list
        path = draw(st.sampled_from(existing), label="path")
        return f"{'.'.join(map(str, path))}: deleted", ("delete", path, None)
    if kind == "add unknown key":
        parents = [()] + [p for p in existing if isinstance(node(tree, p), dict)]
        parent = draw(st.sampled_from(parents), label="section")
        key = draw(st.sampled_from(UNKNOWN_KEYS), label="key")
        value = draw(st.sampled_from([1, "x", None, {"a": 1}]), label="value")
        return f"{'.'.join(map(str, (*parent, key)))}: unknown key added = {show(value)}", ("set", (*parent, key), value)
    path = draw(st.sampled_from(extra), label="path")
    value = draw(st.sampled_from(values_for(path)), label="value")
    return f"{'.'.join(map(str, path))}: set to {show(value)}", ("set", path, value)


def apply_mutation(tree: dict, change) -> dict:
    action, path, value = change
    tree = copy.deepcopy(tree)
    parent = node(tree, path[:-1])
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return tree


def concrete(value, example: Path):
    """``value`` with the ABS token rewritten to an absolute path inside the example's folder."""
    if isinstance(value, str):
        return value.replace(ABS, str(example / "outside" / "abs"))
    if isinstance(value, list):
        return [concrete(v, example) for v in value]
    if isinstance(value, dict):
        return {concrete(k, example): concrete(v, example) for k, v in value.items()}
    return value


def dump(tree) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------- damaged files


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _lying_safetensors() -> bytes:
    """A safetensors header that claims more bytes than the file holds."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 16


DAMAGE = ["delete", "empty", "truncate", "random bytes", "a folder", "binary garbage appended"]
JSON_DAMAGE = ["[]", "{}", "null", '{"test": 5}', '{"test": {"student": "x"}}', '{"test": {}, "data": 7}', "NaN",
               '{"test": {"student": {"accuracy": "high"}}}', '{"stage_seconds": [1], "test": {}}']
SAFETENSORS_DAMAGE = ["another model's weights", "a pickle", "a lying header"]
METRICS_DAMAGE = ["not json\n", "[1, 2]\n", "{}\n", '{"stage": "distil", "epoch": "x", "train": 5}\n', "NaN\n",
                  '{"stage": 1, "epoch": 1, "train": {"loss": NaN}}\n']


def damage(path: Path, how: str, example: Path) -> None:
    """Damage one file of a sandbox in place."""
    if how == "delete":
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    data = path.read_bytes() if path.is_file() else b""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(_random_bytes(max(len(data), 64), len(data)))
    elif how == "a folder":
        path.mkdir()
        (path / "inside").write_text("x")
    elif how == "binary garbage appended":
        path.write_bytes(data + b"\xff\xfe\x00garbage\x80")
    elif how == "another model's weights":  # the CNN student's, or for the CNN run an MLP's
        other = "mlp_student" if "cnn" in path.parts else "cnn_student"
        shutil.copyfile(example / "sb" / "files" / f"{other}.safetensors", path)
    elif how == "a pickle":
        shutil.copyfile(example / "sb" / "files" / "pickle.pt", path)
    elif how == "a lying header":
        path.write_bytes(_lying_safetensors())
    elif how.startswith("append "):
        path.write_bytes(data + how.removeprefix("append ").encode())
    else:  # literal content
        path.write_text(how)


def damage_choices(name: str) -> list[str]:
    if name.endswith(".json"):
        return DAMAGE + JSON_DAMAGE
    if name.endswith(".safetensors") or name.endswith(".pt"):
        return DAMAGE + SAFETENSORS_DAMAGE
    if name.endswith(".jsonl"):
        return DAMAGE + ["append " + m for m in METRICS_DAMAGE]
    if name.endswith(".yaml"):
        return DAMAGE + ["[]", "5", "name: [unclosed\n", "{}"]
    return DAMAGE


# ----------------------------------------------------------------------------- the sandbox


@dataclass
class Case:
    """One CLI call on a damaged sandbox: how to set it up, and what it may write."""

    family: str
    argv: list[str]
    notes: list[str] = field(default_factory=list)  # what was broken
    setup: list = field(default_factory=list)  # functions of the example folder
    # what the command may write on exit 0 / keep on exit 2, relative to the sandbox
    writes: list[str] = field(default_factory=list)
    run_dirs: list[tuple[str, str]] = field(default_factory=list)  # (runs dir, name) of a 'run'
    must_finish: bool = True  # exit 0 of a 'run': RUNS/<name> exists, no .incomplete
    patches: list = field(default_factory=list)  # functions (monkeypatch, example) active during the call
    tmpfs: tuple[str, str] | None = None  # (folder of the sandbox, size): a small tmpfs mounted there
    damaged: list[str] = field(default_factory=list)  # files damaged on purpose (absolute, set by setup)
    refuse_damaged: bool = False  # exit 0 only if every damaged file was rebuilt (changed) or removed
    must_refuse: bool = False  # the damage cannot be worked around: exit 2 is the only right answer
    max_message: int | None = None  # the error line's length at most (echoed values shortened)
    max_seconds: float | None = None  # the call's time at most (no minutes spent on a huge value)
    memory_cap: bool = False  # run under a cap on the address space (a label of 1e9 must not allocate)

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for the drawn case
        printer.text(self.describe())

    def describe(self, example: Path | None = None) -> str:
        argv = " ".join(_quote(a) for a in self.argv)
        if example is not None:
            argv = argv.replace(str(example / "outside"), "<example>/outside")
        lines = [f"[{self.family}] kdistill {argv}  (cwd: the sandbox)"]
        lines += [f"  broken: {n}" for n in self.notes]
        return re.sub(r"([^'\s])\1{99,}", lambda m: f"<{m.group(1)!r}*{len(m.group(0))}>", "\n".join(lines))


def _quote(arg: str) -> str:
    long = re.search(r"(.)\1{99,}", arg)  # 'x' * 300: shown as such
    if long:
        run = long.group(0)
        return f"{arg[:long.start()]!r}+{run[0]!r}*{len(run)}+{arg[long.end():]!r}"
    return arg if arg and re.fullmatch(r"[\w./@=:+,-]+", arg) else repr(arg)


def single_component(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


@dataclass
class Template:
    root: Path  # holds sb/ (the sandbox, the working directory) and outside/
    base: Path  # where examples are made
    stopped_ok: bool
    problems: list[str]
    counter: int = 0

    def new_example(self) -> Path:
        self.counter += 1
        example = self.base / f"ex{self.counter:05d}"
        shutil.copytree(self.root, example, symlinks=True)
        return example


def write_support_files(sb: Path) -> None:
    files = sb / "files"
    files.mkdir(parents=True)
    (files / "binary.bin").write_bytes(_random_bytes(4096, 1))
    (files / "binary.yaml").write_bytes(_random_bytes(512, 2))
    (files / "empty.yaml").write_text("")
    (files / "list.yaml").write_text("- a\n- b\n")
    (files / "scalar.yaml").write_text("5\n")
    (files / "bad.yaml").write_text("name: x\nstages: [{name: a, epochs: 1\n")
    (files / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (files / "tabs.yaml").write_text("name: x\n\tstages: []\n")
    (files / "alias.yaml").write_text("name: &a [*a]\nstages: [{name: a}]\n")
    (files / "dir.yaml").mkdir()
    (files / "afile").write_text("not a folder\n")
    (files / "random.safetensors").write_bytes(_random_bytes(2048, 3))
    (files / "empty.safetensors").write_bytes(b"")
    (files / "lying.safetensors").write_bytes(_lying_safetensors())
    (files / "dir.safetensors").mkdir()
    torch.save({"stages.0.0.weight": torch.zeros(16, 64)}, files / "pickle.pt")
    shutil.copyfile(files / "pickle.pt", files / "pickle.safetensors")
    if not ROOT:
        (files / "ro").mkdir()
        (files / "ro").chmod(0o555)
    write_labelled_files(files)


def write_labelled_files(files: Path) -> None:
    """Digits as .npy arrays with .npy labels, and as 8x8 PNGs listed in a CSV (path,label): the
    label files the labels family spoils."""
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x[:200] * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8), y[:200].astype(np.int64)
    np.save(files / "x.npy", x[:150])
    np.save(files / "y.npy", y[:150])
    np.save(files / "xt.npy", x[150:])
    np.save(files / "yt.npy", y[150:])
    (files / "img").mkdir()
    rows = ["path,label"]
    for i in range(120):
        Image.fromarray(x[i, 0]).save(files / "img" / f"{i}.png")
        rows.append(f"{i}.png,{y[i]}")
    (files / "img" / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf8")


def build_template(base: Path) -> Template:
    root = base / "template"
    sb = root / "sb"
    (root / "outside").mkdir(parents=True)
    (root / "outside" / "keep.txt").write_text("must survive\n")
    write_support_files(sb)
    problems = []
    for name, tree in BASELINES.items():
        (sb / f"{name}.yaml").write_text(dump(tree), encoding="utf8")
        result = invoke(["run", f"{name}.yaml", "--runs-dir", "runs", "-q"], sb, timeout=300)
        if result.code != 0:
            problems.append(f"baseline {name} exited {result.code}: {last_line(result.stderr)} "
                            f"{result.crash!r}")
        for role in ("mlp", "cnn"):
            if name == {"mlp": "kd", "cnn": "cnn"}[role] and (sb / "runs" / name / "student.safetensors").is_file():
                shutil.copyfile(sb / "runs" / name / "student.safetensors", sb / "files" / f"{role}_student.safetensors")
        if name == "teach" and (sb / "runs" / "teach" / "teacher.safetensors").is_file():
            shutil.copyfile(sb / "runs" / "teach" / "teacher.safetensors", sb / "teacher.safetensors")
            shutil.copyfile(sb / "runs" / "teach" / "teacher.safetensors", sb / "files" / "teacher.safetensors")
    assert not problems, "the valid baseline recipes must run: " + "; ".join(problems)
    (sb / "stopped.yaml").write_text(dump(STOPPED), encoding="utf8")
    stopped_ok = stop_after_first_epoch(sb, problems)
    build_cache_run(sb, problems)
    return Template(root, base, stopped_ok, problems)


def build_cache_run(sb: Path, problems: list[str]) -> None:
    """The finished run ``cached`` (its stage's teacher outputs in ``sb/cache/<key>/``), and a
    check that running its recipe again reads that same cache (the cache family's premise)."""
    (sb / "cached.yaml").write_text(dump(CACHED), encoding="utf8")
    result = invoke(["run", "cached.yaml", "--runs-dir", "runs", "-q"], sb, timeout=300)
    folders = list((sb / "cache").glob("*")) if (sb / "cache").is_dir() else []
    if result.code != 0 or len(folders) != 1:
        problems.append(f"the cached run exited {result.code} ({last_line(result.stderr)!r}) with {len(folders)} caches")
        return
    before = snapshot(sb / "cache")
    again = invoke(["cache", "cached.yaml", "-q"], sb, timeout=300)
    if again.code != 0 or snapshot(sb / "cache") != before:
        problems.append(f"'kdistill cache cached.yaml' exited {again.code} or did not reuse the run's cache")
    assert not problems, "the cached run must build one cache and reuse it: " + "; ".join(problems)


def stop_after_first_epoch(sb: Path, problems: list[str]) -> bool:
    """Run STOPPED and make it stop (as on SIGINT) once its first checkpoint is written."""
    import contextlib

    from kdistill import runner

    folder = sb / "runs" / "stopped.incomplete"

    class CheckpointWritten:  # "a signal arrived" as soon as the first checkpoint exists
        def is_set(self):
            return any((folder / "checkpoints").glob("ckpt-*.pt"))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "stop_on_signals", lambda: contextlib.nullcontext(CheckpointWritten()))
        result = invoke(["run", "stopped.yaml", "--runs-dir", "runs", "-q"], sb, timeout=300)
    if result.code != 2 or not resumable(folder):
        problems.append(f"a run stopped after its first epoch exited {result.code} "
                        f"({last_line(result.stderr)!r}, {result.crash!r}) and left "
                        f"{'a' if resumable(folder) else 'no'} resumable {folder.name}")
        return False
    return True


# ----------------------------------------------------------------------------- checking one case


def record_site(outcome: Outcome) -> None:
    if outcome.error is None:
        return
    first = origin(outcome.error)
    site = site_of(first).rsplit(":", 1)[0]
    message = str(outcome.error).strip()
    prefix = message.split(":", 1)[0]
    if len(prefix) > 30 or any(c in prefix for c in "/'\""):  # no short prefix: its first word
        word = re.match(r"[A-Za-z][\w.-]*(?= )", message)
        prefix = word.group(0) if word else "(a path)"
    SITES[(site, prefix)] += 1
    EXAMPLE_MESSAGE.setdefault((site, prefix), re.sub(r"\S*/ex\d+/sb/", "", message)[:200])


class ContractBroken(AssertionError):
    """The CLI broke the contract of issue 13 on one case."""


def fail(kind: str, case: Case, example: Path, outcome: Outcome, detail: str, cause: BaseException | None):
    text = (f"{kind}\n{case.describe(example)}\n  exit code: {outcome.code}\n"
            f"  stderr (last line): {last_line(outcome.stderr)[:500]!r}\n{detail}")
    text = text.replace(str(example / "sb") + os.sep, "").replace(str(example), "<example>")
    exc = ContractBroken(text)
    if cause is not None:  # hypothesis tells bugs apart by where the chained error came from
        exc.__cause__ = exc.__context__ = cause
    raise exc


def run_case(case: Case, template: Template) -> None:
    example = template.new_example()
    sb = example / "sb"
    mounted = None
    try:
        for step in case.setup:
            step(example)
        case.argv = [concrete(a, example) for a in case.argv]
        case.writes = [concrete(w, example) for w in case.writes]
        case.run_dirs = [(concrete(r, example), n) for r, n in case.run_dirs]
        if case.tmpfs is not None:
            mounted = mount_tmpfs(sb / case.tmpfs[0], case.tmpfs[1])
        before = snapshot(example)
        with pytest.MonkeyPatch.context() as mp, address_space_cap(case.memory_cap):
            for patch in case.patches:
                patch(mp, example)
            outcome = invoke(case.argv, sb)
        SLOWEST.append((outcome.seconds, f"exit {outcome.code} " + case.describe(example).splitlines()[0]
                        + " | " + "; ".join(n.splitlines()[0] for n in case.notes)))
        SLOWEST.sort(key=lambda t: -t[0])
        del SLOWEST[8:]
        after = snapshot(example)
        check(case, example, outcome, before, after)
    finally:
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], check=False)
        shutil.rmtree(example, ignore_errors=True)
        if example.exists():  # a folder made unwritable
            subprocess.run(["chmod", "-R", "u+rwx", str(example)], check=False)
            shutil.rmtree(example, ignore_errors=True)


def mount_tmpfs(folder: Path, extra: str) -> Path:
    """A tmpfs at ``folder`` holding what ``folder`` held, with ``extra`` bytes ("16k") free."""
    held = Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, held / "x", symlinks=True)
    shutil.rmtree(folder)
    folder.mkdir()
    pages = sum(-(-(p.stat().st_size) // 4096) + 1 for p in (held / "x").rglob("*"))  # a page per inode too
    size = 4096 * (pages + 2) + int(extra.removesuffix("k")) * 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    shutil.copytree(held / "x", folder, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(held)
    return folder


@contextlib.contextmanager
def address_space_cap(on: bool):
    """With ``on``: this process's address space capped at 4 GiB more than it holds now (Linux),
    so an allocation sized by a label of 1e9 fails at once instead of swapping the machine."""
    status = Path("/proc/self/status")
    if not on or not status.exists():
        yield
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    held = int(re.search(r"VmSize:\s+(\d+) kB", status.read_text()).group(1)) * 1024
    cap = held + (4 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def tally(case: Case, what: str) -> None:
    OUTCOMES[what] += 1
    BY_FAMILY.setdefault(case.family, Counter())[what] += 1


def check(case: Case, example: Path, outcome: Outcome, before: dict, after: dict) -> None:
    sb = example / "sb"
    if outcome.crash is not None:
        tally(case, "failure")
        exc = outcome.crash
        tb = "".join(traceback.format_exception(exc))
        where = site_of(exc)
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if _relative(f.filename).startswith("kdistill/")]
        if ours and f"{_relative(ours[-1].filename)}:{ours[-1].name}:{ours[-1].lineno}" != where:
            where = f"{_relative(ours[-1].filename)}:{ours[-1].name}:{ours[-1].lineno} (in {where})"
        kind = "HANG" if isinstance(exc, CallTimeout) else "CRASH (exit 1)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first = re.sub(r"(.)\1{99,}", lambda m: f"<{m.group(1)!r}*{len(m.group(0))}>", first)[:300]
        fail(f"{kind}: {type(exc).__name__}: {first}  at {where}", case, example, outcome, "  traceback (last 12 lines):\n"
             + "\n".join("    " + line for line in tb.splitlines()[-12:]), exc)
    if outcome.code not in (0, 2):
        tally(case, "failure")
        fail(f"EXIT CODE {outcome.code}", case, example, outcome, f"  stderr: {outcome.stderr[-1500:]}", None)
    cause = origin(outcome.error) if outcome.error is not None else None
    if outcome.code == 2:
        record_site(outcome)
        lines = [line for line in outcome.stderr.splitlines() if line.strip()]
        message = str(outcome.error).strip() if outcome.error is not None else None
        problems = []
        if not lines or not lines[-1].startswith("error: "):
            problems.append("stderr's last non-empty line is not 'error: ...'")
        if sum(line.startswith("error: ") for line in lines) != 1:
            problems.append("stderr has more than one 'error: ' line")
        if "Traceback" in outcome.stderr:
            problems.append("stderr holds a traceback")
        if message is not None and ("\n" in message or not message):
            problems.append(f"the message is not one non-empty line: {message[:300]!r}")
        if problems:
            tally(case, "failure")
            fail("BAD ERROR MESSAGE: " + "; ".join(problems), case, example, outcome,
                 f"  stderr: {outcome.stderr[-1500:]!r}", cause)
    regions = allowed_regions(case, sb, outcome)
    bad = []
    for what, path in changes(before, after):
        if any(inside(path, r) for r in regions):
            continue
        # a folder made on the way to an allowed one (RUNS itself, created for the run)
        if what == "created" and after[path] == "<dir>" and any(inside(r, path) for r in regions):
            continue
        bad.append(f"{what} {os.path.relpath(path, example)}")
    if bad:
        tally(case, "failure")
        shown = "\n".join("    " + b for b in bad[:15]) + (f"\n    ... {len(bad) - 15} more" if len(bad) > 15 else "")
        kind = "TRACE LEFT ON DISK after exit 2" if outcome.code == 2 else "WROTE OUTSIDE ITS OUTPUT on exit 0"
        fail(kind, case, example, outcome, f"  allowed: {[os.path.relpath(r, example) for r in regions]}\n"
             f"  changes:\n{shown}", cause)
    if outcome.code == 0 and case.must_refuse:
        tally(case, "failure")
        fail("WORKED ON FROM DAMAGED INPUT on exit 0", case, example, outcome,
             "  the damage cannot be worked around: exit 2 naming the damaged file is the only right answer", None)
    unchanged = [p for p in case.damaged if p in after and after[p] == before.get(p)]
    if outcome.code == 0 and case.refuse_damaged and unchanged:
        tally(case, "failure")
        fail("USED A DAMAGED FILE on exit 0", case, example, outcome, "  still damaged, neither rebuilt nor refused: "
             + ", ".join(os.path.relpath(p, example) for p in unchanged), None)
    message = str(outcome.error or "")
    if case.max_message is not None and len(message) > case.max_message:
        tally(case, "failure")
        fail(f"MESSAGE TOO LONG ({len(message):,} characters; at most {case.max_message})", case, example, outcome,
             f"  the message starts: {message[:300]!r}", cause)
    if case.max_seconds is not None and outcome.seconds > case.max_seconds:
        tally(case, "failure")
        fail(f"TOO SLOW ({outcome.seconds:.0f} s; at most {case.max_seconds:.0f})", case, example, outcome, "", cause)
    if outcome.code == 0 and case.must_finish:
        for runs, name in case.run_dirs:
            final = sb / runs / name if single_component(name) else None
            if final is None or not final.is_dir() or final.with_name(final.name + ".incomplete").exists():
                tally(case, "failure")
                fail("RUN NOT COMPLETE on exit 0", case, example, outcome,
                     f"  expected a finished {runs}/{name} and no {name}.incomplete", None)
    tally(case, f"exit {outcome.code}")


def allowed_regions(case: Case, sb: Path, outcome: Outcome) -> list[str]:
    def absolute(rel: str) -> str:
        return os.path.normpath(os.path.join(sb, rel))

    if outcome.code == 0:
        regions = [absolute(w) for w in case.writes]
        for runs, name in case.run_dirs:
            if single_component(name):  # a name that is not one folder name may write nowhere
                regions += [absolute(os.path.join(runs, name)), absolute(os.path.join(runs, name + ".incomplete"))]
        return regions
    if outcome.code == 2 and "kdistill run --resume" in str(outcome.error or ""):  # it says how to go on
        kept = []
        for runs, name in case.run_dirs:
            if single_component(name):
                partial = Path(absolute(os.path.join(runs, name + ".incomplete")))
                if resumable(partial):
                    kept.append(str(partial))
        return kept
    return []


# ----------------------------------------------------------------------------- the families of cases


def expected_name(tree) -> str | None:
    if not isinstance(tree, dict):
        return None
    name = tree.get("name", "run")
    return name if isinstance(name, str) else None


@st.composite
def runs_dir_choice(draw):
    runs = draw(st.sampled_from(["out", "out", "out", "runs"]), label="runs dir")
    overwrite = draw(st.booleans(), label="--overwrite") if runs == "runs" else False
    return runs, overwrite


@st.composite
def recipe_field_case(draw) -> Case:
    base = draw(st.sampled_from(list(BASELINES)), label="baseline")
    tree = BASELINES[base]
    note, change = draw(mutations(tree), label="mutation")
    mutated = apply_mutation(tree, change)
    runs, overwrite = draw(runs_dir_choice())
    argv = ["run", "fuzz.yaml", "--runs-dir", runs, "-q"] + (["--overwrite"] if overwrite else [])
    case = Case("recipe field", argv, [f"{base}.yaml, {note}"])
    case.setup.append(lambda ex, m=mutated: (ex / "sb" / "fuzz.yaml").write_text(dump(concrete(m, ex)), encoding="utf8"))
    case.notes.append("fuzz.yaml:\n" + "\n".join("      " + line for line in dump(mutated).splitlines()))
    case.run_dirs = [(runs, expected_name(mutated))]
    return case


def override_keys(tree: dict) -> list[str]:
    keys = [".".join(map(str, p)) for p in all_paths(tree)]
    stages = tree.get("stages", [])
    for i, stage in enumerate(stages):
        keys += [k.replace(f"stages.{i}.", f"stages.{stage['name']}.", 1) for k in keys if k.startswith(f"stages.{i}.")]
    keys += [".".join(map(str, p)) for p in EXTRA_PATHS]
    keys += ["stages.distil.epocs", "nosuch", "data.nosuch", "stages.9.epochs", "stages.nosuch.epochs",
             "stages.-1.epochs", "stages.-9.epochs", "stages.distil.loss.kd.weight", "stages.distil.loss.5.weight",
             "name.sub", "latency.x", "stages.distil.epochs.x", "", ".", "a..b", "stages.", "teacher.args.hidden.9",
             "teacher.args.hidden.x", "stages.0.loss.0.args", "data", "stages", "stages.0", "teacher", "student",
             "stages.distil", "stages.0.loss", " name", "NAME"]
    return sorted(set(keys))


RAW_OVERRIDE_VALUES = ["", "[", "{a: 1", ": :", "!!python/object/apply:os.system ['true']", "&a [*a]", "*undefined",
                       "'unclosed", "[1, [2, [3]]]", "{stages: []}", "null", "~", "yes", "0x10", "1e999", "-.inf",
                       ".nan", "0o7", "2001-01-01", "!!binary aGk=", "? a", "%"]
MALFORMED_OVERRIDES = ["noequals", "=5", "==", "name", "stages.distil.epochs", "=", " = "]


def yaml_text(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


@st.composite
def override_case(draw) -> Case:
    base = draw(st.sampled_from(list(BASELINES)), label="baseline")
    tree = BASELINES[base]
    kind = draw(st.sampled_from(["key=value", "key=raw text", "malformed"]), label="kind")
    name = expected_name(tree)
    if kind == "malformed":
        override = draw(st.sampled_from(MALFORMED_OVERRIDES), label="override")
    else:
        key = draw(st.sampled_from(override_keys(tree)), label="key")
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        if kind == "key=value":
            value = draw(st.sampled_from(values_for(path)), label="value")
            if isinstance(value, str) and "\0" in value:
                value = value.replace("\0", "")  # no NUL in a command line
            raw = yaml_text(value)
        else:
            raw = draw(st.sampled_from(RAW_OVERRIDE_VALUES), label="raw value")
        override = f"{key}={raw}"
        if key.strip() == "name":
            try:
                parsed = yaml.safe_load(raw) if raw else None
            except yaml.YAMLError:
                parsed = raw
            name = parsed if isinstance(parsed, str) else None
    runs, overwrite = draw(runs_dir_choice())
    argv = ["run", f"{base}.yaml", override, "--runs-dir", runs, "-q"] + (["--overwrite"] if overwrite else [])
    case = Case("override", argv, [f"the override {override!r} on {base}.yaml"])
    case.run_dirs = [(runs, name)]
    return case


RECIPE_PATHS = ["nope.yaml", "files", "files/binary.bin", "files/binary.yaml", "files/empty.yaml", "files/list.yaml",
                "files/scalar.yaml", "files/bad.yaml", "files/latin1.yaml", "files/tabs.yaml", "files/alias.yaml",
                "files/dir.yaml", ABS + "/x.yaml", "", ".", "x" * 300 + ".yaml", "runs/kd/summary.json",
                "runs/kd/metrics.jsonl", "runs/kd/student.safetensors", "runs/kd/recipe.yaml", "files/afile/x.yaml"]
RUNS_DIRS = ["files/afile", "files/afile/sub", "", ".", ABS, "new/deep/er", "runs/kd", "x" * 300,
             "runs/kd/summary.json", "..", "files/binary.bin"] + ([] if ROOT else ["files/ro", "files/ro/sub"])
WEIGHT_FILES = ["files/random.safetensors", "files/empty.safetensors", "files/lying.safetensors", "files/dir.safetensors",
                "files/pickle.pt", "files/pickle.safetensors", "files/cnn_student.safetensors", "nope.safetensors",
                "runs/kd/predictions.safetensors", "runs/base/baseline.safetensors", "", ".", ABS + ".safetensors",
                "files/binary.bin", "x" * 300 + ".safetensors", "runs/teach/teacher.safetensors", "files/afile",
                "files/teacher.safetensors"]


@st.composite
def path_case(draw) -> Case:
    what = draw(st.sampled_from(["recipe path", "--runs-dir", "teacher weights", "student weights",
                                 "damaged teacher weights"]), label="what")
    if what == "recipe path":
        path = draw(st.sampled_from(RECIPE_PATHS), label="recipe path")
        case = Case("path", ["run", path, "--runs-dir", "out", "-q"], [f"the recipe path {path!r}"])
        case.run_dirs = [("out", "kd" if path == "runs/kd/recipe.yaml" else None)]
        return case
    if what == "--runs-dir":
        runs = draw(st.sampled_from(RUNS_DIRS), label="runs dir")
        base = draw(st.sampled_from(["kd", "cnn"]), label="baseline")
        overwrite = draw(st.booleans(), label="--overwrite")
        case = Case("path", ["run", f"{base}.yaml", "--runs-dir", runs, "-q"] + (["--overwrite"] if overwrite else []),
                    [f"--runs-dir {runs!r}"])
        case.run_dirs = [(runs, base)]
        return case
    if what == "damaged teacher weights":
        how = draw(st.sampled_from(damage_choices("x.safetensors")), label="damage")
        case = Case("path", ["run", "fromw.yaml", "--runs-dir", "out", "-q"], [f"teacher.safetensors: {how}"])
        case.setup.append(lambda ex, how=how: damage(ex / "sb" / "teacher.safetensors", how, ex))
        case.run_dirs = [("out", "fromw")]
        return case
    weights = draw(st.sampled_from(WEIGHT_FILES), label="weights")
    role = "teacher" if what == "teacher weights" else "student"
    base = "fromw" if role == "teacher" else draw(st.sampled_from(["kd", "cnn", "base"]), label="baseline")
    tree = copy.deepcopy(BASELINES[base])
    tree[role]["weights"] = weights
    case = Case("path", ["run", "fuzz.yaml", "--runs-dir", "out", "-q"], [f"{base}.yaml with {role}.weights: {weights!r}"])
    case.setup.append(lambda ex, t=tree: (ex / "sb" / "fuzz.yaml").write_text(dump(concrete(t, ex)), encoding="utf8"))
    case.run_dirs = [("out", base)]
    return case


RESUME_TARGETS = ["runs/stopped.incomplete", "runs/stopped.incomplete", "runs/stopped", "runs/kd", "runs", "nope",
                  "files/binary.bin", ABS, ".", "", "runs/stopped.incomplete/recipe.yaml", "x" * 300]
STOPPED_FILES = ["recipe.yaml", "metrics.jsonl", "checkpoints", "<checkpoint>", ".kdistill-run"]


@st.composite
def resume_case(draw) -> Case:
    target = draw(st.sampled_from(RESUME_TARGETS), label="resume target")
    extra = draw(st.sampled_from([[], [], ["kd.yaml"], ["stages.0.epochs=3"]]), label="extra argument")
    argv = ["run", *extra, "--resume", target, "-q"]
    case = Case("resume", argv, [f"--resume {target!r}" + (f" with {extra}" if extra else "")])
    if draw(st.booleans(), label="damage the stopped run"):
        part = draw(st.sampled_from(STOPPED_FILES), label="file")
        if part == "recipe.yaml" and draw(st.booleans(), label="mutate its recipe"):
            tree = yaml.safe_load(dump(STOPPED))
            note, change = draw(mutations(tree), label="mutation")
            mutated = apply_mutation(tree, change)
            case.notes.append(f"runs/stopped.incomplete/recipe.yaml: {note}")
            case.setup.append(lambda ex, m=mutated: (ex / "sb" / "runs" / "stopped.incomplete" / "recipe.yaml")
                              .write_text(dump(concrete(m, ex)), encoding="utf8"))
        else:
            how = draw(st.sampled_from(damage_choices(part if part != "<checkpoint>" else "x.pt")), label="damage")
            case.notes.append(f"runs/stopped.incomplete/{part}: {how}")

            def hurt(ex, part=part, how=how):
                folder = ex / "sb" / "runs" / "stopped.incomplete"
                if part == "<checkpoint>":
                    for ckpt in sorted((folder / "checkpoints").glob("ckpt-*.pt")):
                        damage(ckpt, how, ex)
                else:
                    damage(folder / part, how, ex)
            case.setup.append(hurt)
    case.run_dirs = [("runs", "stopped")]
    return case


FINISHED = ["kd", "base", "hint", "cnn", "teach", "fromw"]
RUN_FILES = ["summary.json", "recipe.yaml", "<recipe field>", "student.safetensors", "predictions.safetensors",
             "metrics.jsonl", "teacher.safetensors", "baseline.safetensors", "report.md", "plots", ".kdistill-run"]
NOT_RUNS = ["runs/stopped.incomplete", "runs", ".", "files/binary.bin", "nope", ABS, "files", "x" * 300]


@st.composite
def finished_run_case(draw, command: str) -> Case:
    if draw(st.integers(0, 9), label="not a run dir?") == 0:
        run_dir, name = draw(st.sampled_from(NOT_RUNS), label="run dir"), None
    else:
        name = draw(st.sampled_from(FINISHED), label="run")
        run_dir = f"runs/{name}"
    case = Case(f"finished run: {command}", [], [])
    if name is not None:
        part = draw(st.sampled_from(["(nothing)"] + RUN_FILES), label="file")
        if part == "<recipe field>":
            tree = yaml.safe_load((TEMPLATE_RECIPES[name]))
            note, change = draw(mutations(tree), label="mutation")
            mutated = apply_mutation(tree, change)
            case.notes.append(f"{run_dir}/recipe.yaml: {note}")
            case.setup.append(lambda ex, m=mutated, d=run_dir: (ex / "sb" / d / "recipe.yaml")
                              .write_text(dump(concrete(m, ex)), encoding="utf8"))
        elif part != "(nothing)":
            how = draw(st.sampled_from(damage_choices(part)), label="damage")
            case.notes.append(f"{run_dir}/{part}: {how}")
            case.setup.append(lambda ex, p=f"{run_dir}/{part}", how=how: damage(ex / "sb" / p, how, ex))
    if command == "eval":
        argv = ["eval", run_dir, "--no-latency"]
        option = draw(st.sampled_from(["", "", "--weights", "--data"]), label="option")
        if option == "--weights":
            argv += ["--weights", draw(st.sampled_from(WEIGHT_FILES), label="weights")]
        elif option == "--data":
            argv += ["--data", draw(st.sampled_from(["nope", "files/binary.bin", "files", "files/empty.yaml", ABS]),
                                    label="data")]
    elif command == "export":
        fmt = draw(st.sampled_from(["safetensors", "safetensors", "onnx", "torchscript", "bogus", "", "ONNX"]),
                   label="format")
        out = draw(st.sampled_from([None, None, "exp", "files/afile", "runs/kd", ABS, "new/deep", "files/binary.bin"]),
                   label="--out")
        argv = ["export", run_dir, "--format", fmt] + (["--out", out] if out else [])
        if draw(st.booleans(), label="--overwrite"):
            argv.append("--overwrite")
        case.writes = [out if out else f"{run_dir}/export"]
    else:
        others = draw(st.sampled_from([[], [], ["runs/kd"], ["runs/cnn"], ["nope"]]), label="more runs")
        out = draw(st.sampled_from([None, "rep", "files/afile"]), label="--out") if others else None
        argv = ["report", run_dir, *others] + (["--out", out] if out else [])
        case.writes = [run_dir, *others] + ([(out or "report")] if others else [])
    case.argv = argv
    case.must_finish = False
    return case


# ----------------------------------------------------------------------------- issue 29's families
#
# symlinks in a run folder, damaged caches and checkpoints, huge input, odd labels and a full
# disk. Each is a family like the ones above (exit 0, or exit 2 with one line and no trace);
# some add a rule of their own (Case.refuse_damaged, Case.must_refuse, Case.max_message).

LINKED = {  # a finished run's file or folder (replaced by a link), and commands reading / writing it
    "report.md": "file", "report.html": "file", "metrics.jsonl": "file", "summary.json": "file", "plots": "folder",
    "export": "folder", "student.safetensors": "file",
}
LINK_TARGETS = ["outside/keep.txt", "a copy in outside/", "outside/dir", "outside/nothing (dangling)"]


def link_to_outside(path: Path, target: str, example: Path) -> None:
    """Replace ``path`` (a file or folder of the sandbox, or nothing) by a link to ``target`` in
    ``outside/``: the file every case has, a copy of what ``path`` held, a folder, or nothing."""
    outside = example / "outside"
    (outside / "dir").mkdir(exist_ok=True)
    (outside / "dir" / "inside.txt").write_text("must survive too\n", encoding="utf8")
    if target == "a copy in outside/":
        dest = outside / f"copy-{path.name}"
        if path.is_dir():
            shutil.copytree(path, dest, symlinks=True)
        elif path.is_file():
            shutil.copyfile(path, dest)
        else:
            dest.mkdir()
    else:
        dest = outside / target.split(" ")[0].removeprefix("outside/")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(dest)


@st.composite
def symlink_case(draw) -> Case:
    """A link inside a run folder to something in ``outside/``: whatever the command does with
    the run, nothing outside may change (exit 2 is the expected answer)."""
    unfinished = draw(st.integers(0, 3), label="unfinished run?") == 0
    target = draw(st.sampled_from(LINK_TARGETS), label="link to")
    if unfinished:
        part = draw(st.sampled_from(["metrics.jsonl", "checkpoints"]), label="linked")
        run_dir = "runs/stopped.incomplete"
        case = Case("symlink", ["run", "--resume", run_dir, "-q"], [f"{run_dir}/{part} -> {target}"])
        case.run_dirs = [("runs", "stopped")]
    else:
        part = draw(st.sampled_from(list(LINKED)), label="linked")
        run_dir = "runs/kd"
        command = draw(st.sampled_from(["report", "export", "export --overwrite", "eval"]), label="command")
        argv = {"report": ["report", run_dir], "export": ["export", run_dir], "eval": ["eval", run_dir, "--no-latency"],
                "export --overwrite": ["export", run_dir, "--overwrite"]}[command]
        case = Case("symlink", argv, [f"{run_dir}/{part} -> {target}"], must_finish=False)
        case.writes = {"report": [run_dir], "export": [f"{run_dir}/export"], "eval": [],
                       "export --overwrite": [f"{run_dir}/export"]}[command]
        if part == "export":  # an export folder there before: made by an earlier export
            case.setup.append(lambda ex: invoke(["export", "runs/kd"], ex / "sb"))
    case.setup.append(lambda ex, p=f"{run_dir}/{part}", t=target: link_to_outside(ex / "sb" / p, t, ex))
    return case


CACHED = _recipe("cached", [{**KD, "cache": {"dir": "cache"}}])  # its cache: sb/cache/<key>/


def _npy_data_offset(path: Path) -> int:
    """Where the array's bytes start in an .npy file (after its header)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)(f)
        return f.tell()


def _zip_member_data(path: Path) -> tuple[int, int]:
    """(start, length) of the largest stored member of a zip (torch.save's tensor data)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    raw = path.read_bytes()
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def flip_bytes(path: Path, start: int, length: int, count: int = 8) -> None:
    """Flip ``count`` bytes (every bit) spread over ``[start, start + length)``."""
    data = bytearray(path.read_bytes())
    for k in range(count):
        data[start + (k * length) // count] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_state(path: Path, how: str) -> None:
    """Damage a cache shard (.npy), its meta.json, or a checkpoint (.pt, a zip) in place."""
    data = path.read_bytes()
    if how == "truncate to half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "truncate by 16 bytes":
        path.write_bytes(data[:-16])
    elif how == "all zero bytes":
        path.write_bytes(b"\0" * len(data))
    elif how == "data zeroed, header kept":
        start = _npy_data_offset(path)
        path.write_bytes(data[:start] + b"\0" * (len(data) - start))
    elif how == "data bytes flipped":
        if path.suffix == ".npy":
            start = _npy_data_offset(path)
            flip_bytes(path, start, len(data) - start)
        else:
            flip_bytes(path, *_zip_member_data(path))
    elif how == "n changed":
        meta = json.loads(data)
        meta["n"] = meta.get("n", 0) + 1
        path.write_text(json.dumps(meta), encoding="utf8")
    elif how == "shard list emptied":
        meta = json.loads(data)
        meta["files"] = {k: [] for k in meta.get("files", {})}
        path.write_text(json.dumps(meta), encoding="utf8")
    else:
        damage(path, how, path.parent)


SHARD_DAMAGE = ["data zeroed, header kept", "data bytes flipped", "all zero bytes", "truncate to half",
                "truncate by 16 bytes", "delete"]
META_DAMAGE = ["truncate to half", "delete", "{}", "[]", "n changed", "shard list emptied", "not json"]


@st.composite
def cache_case(draw) -> Case:
    """A damaged teacher cache under a recipe with a cache stage: a run or ``cache --verify``
    must not train on it or call it good; rebuilding it (exit 0) or refusing (exit 2) are right."""
    part = draw(st.sampled_from(["shard", "shard", "meta.json"]), label="part")
    how = draw(st.sampled_from(SHARD_DAMAGE if part == "shard" else META_DAMAGE), label="damage")
    command = draw(st.sampled_from(["run", "run", "cache --verify", "cache"]), label="command")
    argv = {"run": ["run", "cached.yaml", "--runs-dir", "out", "-q"], "cache": ["cache", "cached.yaml", "-q"],
            "cache --verify": ["cache", "cached.yaml", "--verify", "-q"]}[command]
    case = Case("cache", argv, [f"the cache's {part}: {how}"])
    case.writes = ["cache"]
    case.run_dirs = [("out", "cached")] if command == "run" else []
    if command != "cache" and how != "delete":  # plain 'cache' may trust a finished cache's files
        case.refuse_damaged = True

    def hurt(ex, part=part, how=how):
        folder = next((ex / "sb" / "cache").iterdir())
        path = folder / "meta.json" if part == "meta.json" else sorted(
            p for p in folder.glob("*.npy") if p.name != "params.npy")[0]
        case.damaged.append(str(path))
        damage_state(path, how)
    case.setup.append(hurt)
    return case


@st.composite
def checkpoint_case(draw) -> Case:
    """Every checkpoint of the stopped run damaged: --resume must refuse (exit 2), not train on
    from damaged weights (nor start again silently)."""
    how = draw(st.sampled_from(["data bytes flipped", "truncate by 16 bytes", "truncate to half", "all zero bytes"]),
               label="damage")
    case = Case("checkpoint", ["run", "--resume", "runs/stopped.incomplete", "-q"],
                [f"every runs/stopped.incomplete/checkpoints/ckpt-*.pt: {how}"])
    case.run_dirs = [("runs", "stopped")]
    case.must_refuse = True

    def hurt(ex, how=how):
        for ckpt in sorted((ex / "sb" / "runs" / "stopped.incomplete" / "checkpoints").glob("ckpt-*.pt")):
            damage_state(ckpt, how)
    case.setup.append(hurt)
    return case


def alias_bomb(levels: int) -> str:
    """YAML lines defining ``&b0 .. &b<levels-1>``, each a list of 9 aliases of the one before."""
    lines = ["bomb0: &b0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


HUGE_KINDS = ["alias bomb (unknown key)", "alias bomb (a field)", "string", "list", "deep nesting", "file over 1 MB",
              "5000-digit integer"]
HUGE_SIZES = [10_000, 300_000, 900_000]


@st.composite
def huge_case(draw) -> Case:
    """An alias bomb, a huge value or a huge file, as the recipe or as an override: exit 2 (or
    0) at once, with one short line (echoed values shortened), never a hang."""
    base = draw(st.sampled_from(["kd", "cnn", "teach"]), label="baseline")
    tree = BASELINES[base]
    where = draw(st.sampled_from(["recipe", "override"]), label="where")
    kind = draw(st.sampled_from(HUGE_KINDS), label="kind")
    size = draw(st.sampled_from(HUGE_SIZES), label="size")
    levels = draw(st.sampled_from([3, 5, 9]), label="alias levels")
    # where a value goes: not under the models' args (a list there sizes a network)
    paths = [p for p in all_paths(tree) if not ({"args", "epochs"} & {k for k in p if isinstance(k, str)})]
    path = draw(st.sampled_from(paths), label="path")
    key = ".".join(map(str, path))
    value = {"string": "'" + "x" * size + "'", "list": "[" + "1, " * (size // 3) + "1]",
             "deep nesting": "[" * (size // 300) + "]" * (size // 300), "5000-digit integer": "9" * 5000,
             "alias bomb (a field)": f"*b{levels - 1}", "alias bomb (unknown key)": "1",
             "file over 1 MB": "1"}[kind]
    note = f"{kind} ({size:,} characters, {levels} alias levels) at {key}"
    runs = "out"
    if where == "override":
        flow = "{" + alias_bomb(levels).replace("\n", ", ") + "}"
        override = {"alias bomb (a field)": f"{key}={flow}", "alias bomb (unknown key)": f"zzz={flow}",
                    "file over 1 MB": f"{key}=" + "x" * (1 << 20)}.get(kind, f"{key}={value}")
        case = Case("huge", ["run", f"{base}.yaml", override, "--runs-dir", runs, "-q"], [f"override: {note}"])
    else:
        placed = copy.deepcopy(tree)
        if kind not in ("alias bomb (unknown key)", "file over 1 MB"):
            node(placed, path[:-1])[path[-1]] = "@@VALUE@@"
        text = dump(placed).replace("'@@VALUE@@'", value).replace("@@VALUE@@", value)
        if kind.startswith("alias bomb"):
            text = alias_bomb(levels) + "\n" + text  # its anchors first: unknown keys, unless refused before
        elif kind == "file over 1 MB":
            text = "# " + "x" * (1 << 20) + "\n" + text
        case = Case("huge", ["run", "fuzz.yaml", "--runs-dir", runs, "-q"], [f"fuzz.yaml: {note}"])
        case.setup.append(lambda ex, t=text: (ex / "sb" / "fuzz.yaml").write_text(t, encoding="utf8"))
    case.run_dirs = [(runs, expected_name(tree) if path != ("name",) else None)]
    case.max_message = 600
    case.max_seconds = 30
    return case


ODD_LABELS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "1.5": 1.5, "'cat'": "cat",
              "1e9": 1e9, "2**62": 2**62, "-5": -5, "10 (one past the classes)": 10, "True": True}


@st.composite
def labels_case(draw) -> Case:
    """Odd labels in an npy label file or an image_folder CSV list: exit 2 naming the file, or
    exit 0 (a label that is a whole number of a class), never a crash or a huge allocation
    (these run under a cap on the address space)."""
    odd = draw(st.sampled_from(list(ODD_LABELS)), label="label")
    fmt = draw(st.sampled_from(["npy", "csv"]), label="file")
    rows = draw(st.sampled_from(["one row", "every row"]), label="rows")
    which = draw(st.sampled_from(["train", "test"]), label="which set") if fmt == "npy" else "train"
    value = ODD_LABELS[odd]
    tree = _recipe("labels", [KD])
    if fmt == "npy":
        tree["data"] = {"source": "npy", "path": "files/x.npy", "labelled": 40,
                        "files": {"labels": "files/y.npy", "test_path": "files/xt.npy", "test_labels": "files/yt.npy"}}
        target = "files/y.npy" if which == "train" else "files/yt.npy"
    else:
        tree["data"] = {"source": "image_folder", "path": "files/img/list.csv", "labelled": 40,
                        "images": {"mode": "grayscale"}, "files": {"test": 0.25}}
        target = "files/img/list.csv"
    case = Case("labels", ["run", "fuzz.yaml", "--runs-dir", "out", "-q"], [f"{target}: {odd} in {rows}"])

    def setup(ex, tree=tree, target=target, value=value, rows=rows):
        (ex / "sb" / "fuzz.yaml").write_text(dump(tree), encoding="utf8")
        path = ex / "sb" / target
        if target.endswith(".npy"):
            y = np.load(path).tolist()
            y = [value] * len(y) if rows == "every row" else [value] + y[1:]
            np.save(path, np.array(y))  # numpy picks the dtype: float, int64, uint64, <U3 or bool
        else:
            lines = path.read_text(encoding="utf8").splitlines()
            body = [ln.rsplit(",", 1)[0] + f",{value}" for ln in lines[1:]]
            body = body if rows == "every row" else body[:1] + lines[2:]
            path.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf8")
    case.setup.append(setup)
    case.run_dirs = [("out", "labels")]
    case.memory_cap = True
    return case


DISK_FULL_FILES = ["summary.json", "report.md", "report.html", "metrics.jsonl", "recipe.yaml", ".kdistill-run",
                   "student.safetensors", "predictions.safetensors", "student.json", "a checkpoint"]


def full_disk_patch(name: str):
    """A patch making every write to a file whose name holds ``name`` (temporary names too) fail
    as on a full disk: ``open`` (and pathlib's) for Python's own writes, ``torch.save`` for
    checkpoints. Writes through ``os.open`` or a C library's own are not reached."""
    import builtins
    import errno
    import io

    real_open = builtins.open
    real_save = torch.save

    def full(file):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(file))

    def opener(file, mode="r", *args, **kwargs):
        if (isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")
                and name in os.path.basename(os.fsdecode(file))):
            raise full(file)
        return real_open(file, mode, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if name == "ckpt" and isinstance(f, (str, os.PathLike)):
            raise full(f)
        return real_save(obj, f, *args, **kwargs)

    def apply(mp, example):
        mp.setattr(builtins, "open", opener)
        mp.setattr(io, "open", opener)
        mp.setattr(torch, "save", save)
    return apply


def tmpfs_available() -> bool:
    """Whether this process may mount a tmpfs (root, and allowed to): a real full disk."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(tempfile.mkdtemp())
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=False)
        return ok
    finally:
        shutil.rmtree(probe, ignore_errors=True)


TMPFS = tmpfs_available()
TMPFS_SIZES = ["16k", "48k", "96k", "160k", "400k"]


@st.composite
def disk_full_case(draw) -> Case:
    """The disk fills up while a command writes: exit 2 with one line, and the trace a refusal
    may leave (none, or a resumable run that says so). A real small tmpfs where this process may
    mount one, else a patched writer."""
    how = draw(st.sampled_from(["tmpfs", "patched"] if TMPFS else ["patched"]), label="how")
    command = draw(st.sampled_from(["run", "report", "export", "resume"]), label="command")
    argv = {"run": ["run", "kd.yaml", "--runs-dir", "runs2", "-q"], "report": ["report", "runs/kd"],
            "export": ["export", "runs/kd"], "resume": ["run", "--resume", "runs/stopped.incomplete", "-q"]}[command]
    case = Case("disk full", argv, [], must_finish=command in ("run", "resume"))
    case.writes = {"report": ["runs/kd"], "export": ["runs/kd/export"]}.get(command, [])
    case.run_dirs = {"run": [("runs2", "kd")], "resume": [("runs", "stopped")]}.get(command, [])
    if how == "tmpfs":
        size = draw(st.sampled_from(TMPFS_SIZES), label="size")
        case.notes.append(f"{'runs2' if command == 'run' else 'runs'} on a tmpfs of {size}")
        case.tmpfs = ("runs2" if command == "run" else "runs", size)
    else:
        name = draw(st.sampled_from(DISK_FULL_FILES), label="file")
        case.notes.append(f"writing {name}: ENOSPC")
        case.patches.append(full_disk_patch("ckpt" if name == "a checkpoint" else name))
    return case


TEMPLATE_RECIPES: dict[str, str] = {}  # name -> the recipe.yaml a finished baseline run wrote

# ----------------------------------------------------------------------------- the tests


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    base = tmp_path_factory.mktemp("cli-fuzz")
    made = build_template(base)
    for name in FINISHED:
        TEMPLATE_RECIPES[name] = (made.root / "sb" / "runs" / name / "recipe.yaml").read_text(encoding="utf8")
    yield made
    subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)


@pytest.fixture(scope="session", autouse=True)
def site_report():
    yield
    text = summary_text()
    print("\n" + text)
    if REPORT_DIR:
        Path(REPORT_DIR).mkdir(parents=True, exist_ok=True)
        (Path(REPORT_DIR) / "fuzz-sites.txt").write_text(text + "\n")


def summary_text() -> str:
    total = sum(OUTCOMES.values())
    lines = [f"kdistill CLI fuzz: {total} cases in {time.monotonic() - STARTED:.0f} s "
             f"({OUTCOMES['exit 0']} exit 0, {OUTCOMES['exit 2']} exit 2, {OUTCOMES['failure']} broke the contract; "
             f"shrinking counts too)", ""]
    for family, counts in sorted(BY_FAMILY.items()):
        lines.append(f"  {family:<24} {sum(counts.values()):5} cases: {counts['exit 0']:4} exit 0, "
                     f"{counts['exit 2']:4} exit 2, {counts['failure']:3} broke the contract")
    lines += ["", f"{'where the KDistillError was raised':<58} {'prefix':<22} cases",
             "-" * 90]
    for (site, prefix), count in sorted(SITES.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{site:<58} {prefix[:22]!s:<22} {count:5}   e.g. {EXAMPLE_MESSAGE[site, prefix][:90]}")
    lines += ["", "slowest calls:"] + [f"  {seconds:6.2f} s  {text[:200]}" for seconds, text in SLOWEST]
    return "\n".join(lines)


FAMILIES = {
    "recipe_field": recipe_field_case(),
    "override": override_case(),
    "path": path_case(),
    "resume": resume_case(),
    "eval": finished_run_case("eval"),
    "export": finished_run_case("export"),
    "report": finished_run_case("report"),
    "symlink": symlink_case(),
    "cache": cache_case(),
    "checkpoint": checkpoint_case(),
    "huge": huge_case(),
    "labels": labels_case(),
    "disk_full": disk_full_case(),
}
# examples per family in CI mode (derandomised): about a minute for the file when nothing fails
CI_EXAMPLES = {"recipe_field": 100, "override": 60, "path": 50, "resume": 30, "eval": 30, "export": 30, "report": 30,
               "symlink": 5, "cache": 4, "checkpoint": 3, "huge": 6, "labels": 4, "disk_full": 4}

COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink])


def _run_family(family: str, template: Template, data) -> None:
    if family == "resume" and not template.stopped_ok:
        pytest.fail("no resumable run to fuzz --resume with: " + "; ".join(template.problems))
    case = data.draw(FAMILIES[family], label="case")
    run_case(case, template)


def _family_test(family: str):
    @pytest.mark.skipif(LONG, reason="KDISTILL_FUZZ_MINUTES is set: test_long_fuzz runs the families")
    @settings(max_examples=CI_EXAMPLES[family], derandomize=True, **COMMON)
    @given(data=st.data())
    def test(template, data):
        _run_family(family, template, data)

    test.__name__ = f"test_cli_{family}"
    test.__doc__ = f"Every {family.replace('_', ' ')} case: exit 0, or exit 2 with one 'error:' line and no trace."
    return test


test_cli_recipe_field = _family_test("recipe_field")
test_cli_override = _family_test("override")
test_cli_path = _family_test("path")
test_cli_resume = _family_test("resume")
test_cli_eval = _family_test("eval")
test_cli_export = _family_test("export")
test_cli_report = _family_test("report")
test_cli_symlink = _family_test("symlink")
test_cli_cache = _family_test("cache")
test_cli_checkpoint = _family_test("checkpoint")
test_cli_huge = _family_test("huge")
test_cli_labels = _family_test("labels")
test_cli_disk_full = _family_test("disk_full")


def _long_round(family: str, template: Template):
    """A fresh random hypothesis run of one family: 20 examples (and the shrinking of what
    fails, which is why the deadline is only checked between rounds)."""

    @settings(max_examples=20, derandomize=False, **COMMON)
    @given(data=st.data())
    def inner(data):
        _run_family(family, template, data)

    return inner


@pytest.mark.skipif(not LONG, reason="set KDISTILL_FUZZ_MINUTES for the long randomised run")
def test_long_fuzz(template):
    deadline = time.monotonic() + 60 * MINUTES
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        for family in FAMILIES:
            if time.monotonic() >= deadline:
                break

            try:
                _long_round(family, template)()
            except (KeyboardInterrupt, pytest.fail.Exception, InvalidArgument):
                raise
            except BaseException as err:  # noqa: BLE001  (recorded; the run goes on)
                for one in (err.exceptions if isinstance(err, BaseExceptionGroup) else [err]):
                    text = str(one) + "".join("\n" + n for n in getattr(one, "__notes__", []))
                    signature = text.splitlines()[0][:200] if text else type(one).__name__
                    if isinstance(one, ContractBroken) and isinstance(one.__cause__, KDistillError):
                        signature += " <- " + site_of(origin(one.__cause__))
                    FAILURES.setdefault(signature, [0, text])[0] += 1
    report = [summary_text(), "", f"{rounds} rounds over the {len(FAMILIES)} families; "
              f"{len(FAILURES)} distinct failures"]
    for signature, (count, text) in FAILURES.items():
        report += ["", "=" * 100, f"{count}x {signature}", text]
    joined = "\n".join(report)
    print(joined)
    if REPORT_DIR:
        Path(REPORT_DIR).mkdir(parents=True, exist_ok=True)
        (Path(REPORT_DIR) / "fuzz-failures.txt").write_text(joined + "\n")
    assert not FAILURES, f"{len(FAILURES)} distinct failures (see above)"


# ----------------------------------------------------------------------------- the cases issue 13 names


def _with(base: str, path: tuple, value, runs: str = "out", extra: tuple = ()) -> Case:
    tree = copy.deepcopy(BASELINES[base])
    node(tree, path[:-1])[path[-1]] = value
    case = Case("known", ["run", "fuzz.yaml", "--runs-dir", runs, "-q", *extra],
                [f"{base}.yaml with {'.'.join(map(str, path))}: {show(value)}"])
    case.setup.append(lambda ex: (ex / "sb" / "fuzz.yaml").write_text(dump(concrete(tree, ex)), encoding="utf8"))
    case.run_dirs = [(runs, expected_name(tree))]
    return case


def _damaged_report(part: str, how: str) -> Case:
    case = Case("known", ["report", "runs/kd"], [f"runs/kd/{part}: {how}"], must_finish=False)
    case.setup.append(lambda ex: damage(ex / "sb" / "runs" / "kd" / part, how, ex))
    case.writes = ["runs/kd"]
    return case


def _plain(argv: list[str], note: str, runs: str = "out", name: str | None = None) -> Case:
    case = Case("known", argv, [note])
    case.run_dirs = [(runs, name)]
    return case


# each a function: a fresh Case every call
KNOWN = {
    "binary file as the recipe": lambda: _plain(["run", "files/binary.bin", "--runs-dir", "out", "-q"], "binary recipe"),
    "binary .yaml as the recipe": lambda: _plain(["run", "files/binary.yaml", "--runs-dir", "out", "-q"],
                                                 "binary recipe"),
    "labelled 0 with a labelled stage": lambda: _with("base", ("data", "labelled"), 0),
    "student input size not the data's": lambda: _with("kd", ("student", "args", "in_features"), 32),
    "runs dir that is a file": lambda: _plain(["run", "kd.yaml", "--runs-dir", "files/afile", "-q"],
                                              "--runs-dir a file", "files/afile", "kd"),
    "runs dir under a file": lambda: _plain(["run", "kd.yaml", "--runs-dir", "files/afile/sub", "-q"],
                                            "--runs-dir under a file", "files/afile/sub", "kd"),
    "runs dir name too long": lambda: _plain(["run", "kd.yaml", "--runs-dir", "x" * 300, "-q"],
                                             "--runs-dir of 300 characters", "x" * 300, "kd"),
    "report on truncated predictions": lambda: _damaged_report("predictions.safetensors", "truncate"),
    "report on random predictions": lambda: _damaged_report("predictions.safetensors", "random bytes"),
    "report on truncated summary": lambda: _damaged_report("summary.json", "truncate"),
    "loss weight NaN": lambda: _with("kd", ("stages", 0, "loss", 0, "weight"), float("nan")),
    "name '..' with --overwrite": lambda: _with("kd", ("name",), "..", runs="runs", extra=("--overwrite",)),
    "name '' with --overwrite": lambda: _with("kd", ("name",), "", runs="runs", extra=("--overwrite",)),
    "name 'a/b'": lambda: _with("kd", ("name",), "a/b"),
    "compile with an unknown backend": lambda: _with("kd", ("stages", 0, "compile"), "nosuch"),
}


@pytest.mark.parametrize("known", list(KNOWN))
def test_cli_known_case(known, template):
    """The cases issue 13 names (and ones the fuzz found), each run as one fuzz case would be."""
    run_case(KNOWN[known](), template)


# ----------------------------------------------------------------------------- values unsafe in process

UNSAFE_CASES = {
    "threads: 100000": ("kd", ("threads",), 100000),
}


@pytest.mark.parametrize("case", list(UNSAFE_CASES))
def test_unsafe_values_in_a_subprocess(case, tmp_path):
    """Values that would take the test process down (torch segfaults on 100000 threads) are run
    in a subprocess of their own: they must still end in exit 0 or 2 with one 'error:' line."""
    base, path, value = UNSAFE_CASES[case]
    tree = copy.deepcopy(BASELINES[base])
    node(tree, path[:-1])[path[-1]] = value
    (tmp_path / "fuzz.yaml").write_text(dump(tree), encoding="utf8")
    result = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "fuzz.yaml", "--runs-dir", "out", "-q"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 2), (f"{case}: exit {result.returncode}\n{result.stderr[-2000:]}")
    if result.returncode == 2:
        assert last_line(result.stderr).startswith("error: ") and "Traceback" not in result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.yaml"], "an error left a trace"


# ----------------------------------------------------------------------------- two runs of one name at once

RACER = """
import os, pathlib, sys, time
import kdistill.runner as runner
from kdistill import cli
from matplotlib.figure import Figure

PNG = bytes.fromhex(sys.argv[2])  # the figures are built, not rasterised (as in process: fake_savefig)
Figure.savefig = lambda self, fname, *args, **kwargs: (fname.write(PNG) if hasattr(fname, "write")
                                                       else pathlib.Path(fname).write_bytes(PNG))

real_fit = getattr(runner, "fit", None)
if real_fit is not None:  # a window in which the other process runs into this one's run directory
    def slow_fit(*args, **kwargs):
        time.sleep(3)
        return real_fit(*args, **kwargs)
    runner.fit = slow_fit
go = pathlib.Path(sys.argv[1])
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():  # both processes imported: start together
    time.sleep(0.005)
sys.argv = ["kdistill", *sys.argv[3:]]
cli.main()
"""


def test_two_runs_of_one_name_at_once(tmp_path):
    """Two ``kdistill run kd.yaml --overwrite`` started together into one runs folder: exactly one
    runs (exit 0, a complete run directory), the other exits 2 with one line naming the run it
    ran into, and neither deletes nor mixes into the other's directory."""
    (tmp_path / "kd.yaml").write_text(dump(BASELINES["kd"]), encoding="utf8")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", RACER, str(go), TINY_PNG.hex(), "run", "kd.yaml", "--runs-dir", "runs",
            "--overwrite", "-q"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline and all(
            p.poll() is None for p in procs):
        time.sleep(0.05)  # both have imported kdistill and torch
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    codes = sorted(code for code, _, _ in results)
    shown = "\n".join(f"exit {code}: {err[-1500:]}" for code, _, err in results)
    assert codes == [0, 2], f"not exactly one run and one refusal:\n{shown}"
    loser = next(err for code, _, err in results if code == 2)
    assert last_line(loser).startswith("error: ") and "Traceback" not in loser, shown
    assert sum(line.startswith("error: ") for line in loser.splitlines()) == 1, shown
    assert re.search(r"runs/kd\b|kd\.incomplete", last_line(loser)), f"the refusal does not name the run:\n{shown}"
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir()) if (tmp_path / "runs").is_dir() else []
    assert runs == ["kd"], f"the runs folder holds {runs}, not one finished kd\n{shown}"
    assert (tmp_path / "runs" / "kd" / "summary.json").is_file(), shown
