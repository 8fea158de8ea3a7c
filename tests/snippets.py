"""The fenced blocks of a Markdown page, and how each is checked (tests/test_docs_snippets.py).

The conventions the page writers and this module share:

- ```yaml blocks that hold a whole recipe (a mapping with ``stages``) are validated with
  ``kdistill.load_recipe`` (not run). A block whose first line starts with ``# recipe fragment``
  is put into a minimal digits recipe (each of its top-level keys replaces that key of
  ``MINIMAL_RECIPE``) and validated. Other YAML blocks are parsed only: a syntax error fails.
- ```python blocks run in order, one namespace a page, in a temporary working directory (so
  ``runs/`` and every file a block writes land there), each under ``TIMEOUT_S`` seconds.
- A block preceded by the line ``<!-- snippet: skip (reason) -->`` (blank lines between are
  allowed) is not checked; a marker without a reason, or one no fence follows, is an error.
- Every other block (```bash, ```console, no language) is not checked.

Fences are CommonMark's: three or more backticks or tildes, closed by the same character at
least as many times; the language is the first word of the info string (```python title="x").
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60
YAML_LANGS = {"yaml", "yml"}
PYTHON_LANGS = {"python", "py", "python3"}
FRAGMENT = "# recipe fragment"
SKIP_HOW = "mark it with the line `<!-- snippet: skip (reason) -->` before its fence"

# what a `# recipe fragment` block completes: the smallest recipe that trains on CPU in seconds
MINIMAL_RECIPE = {
    "name": "snippet",
    "seed": 0,
    "device": "cpu",
    "latency": False,
    "data": {"source": "digits", "labelled": 50},
    "teacher": {"model": "mlp", "args": {"hidden": [32]}},
    "student": {"model": "mlp", "args": {"hidden": [16]}},
    "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}],
}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*snippet:(?P<body>.*?)-->\s*$")
SKIP = re.compile(r"^\s*skip\s*\((?P<reason>.*)\)\s*$")


class SnippetError(Exception):
    """A page that breaks the conventions (a skip without a reason, a fence never closed)."""


@dataclass(frozen=True)
class Block:
    page: str          # the page's path as shown in test ids (relative to the repository)
    line: int          # 1-based line of the opening fence
    lang: str          # the info string's first word, lower case ("" when none)
    text: str          # the content, the fence's indentation removed
    skip: str | None   # the reason of the skip marker before the fence, if any

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((s.strip() for s in self.text.splitlines() if s.strip()), "")

    @property
    def checked(self) -> bool:
        return self.lang in YAML_LANGS | PYTHON_LANGS


def page_name(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def parse_page(path: Path) -> list[Block]:
    """Every fenced block of the page at ``path``, in order."""
    return parse_blocks(Path(path).read_text(encoding="utf8"), page_name(path))


def parse_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of Markdown ``text``; ``page`` names it in blocks and errors."""
    blocks, skip, fence, body = [], None, None, []
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if closes(line, fence["fence"]):
                blocks.append(Block(page, fence["line"], fence["lang"], "".join(body), fence["skip"]))
                fence, body = None, []
            else:
                body.append(dedent(line, fence["indent"]) + "\n")
            continue
        opened = FENCE.match(line)
        if opened and not (opened["fence"][0] == "`" and "`" in opened["info"]):
            info = opened["info"].split()
            fence = {"fence": opened["fence"], "indent": len(opened["indent"]), "line": number,
                     "lang": info[0].lower() if info else "", "skip": skip and skip[1]}
            skip = None
        elif MARKER.match(line):
            if skip is not None:
                raise SnippetError(f"{page}:{number}: a second snippet marker; the one at line {skip[0]} "
                                   "is followed by no fence")
            skip = (number, skip_reason(MARKER.match(line)["body"], f"{page}:{number}"))
        elif line.strip() and skip is not None:
            raise SnippetError(f"{page}:{skip[0]}: the snippet marker is followed by text, not a fence; "
                               "put it on the line just before the block's fence")
    if fence is not None:
        raise SnippetError(f"{page}:{fence['line']}: the fence {fence['fence']} is never closed")
    if skip is not None:
        raise SnippetError(f"{page}:{skip[0]}: the snippet marker is followed by no fence")
    return blocks


def closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (same character, at least as long,
    nothing after it but spaces)."""
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def dedent(line: str, indent: int) -> str:
    """``line`` without up to ``indent`` leading spaces (a fence indented in a list)."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent):]


def skip_reason(body: str, where: str) -> str:
    """The reason of a ``<!-- snippet: skip (reason) -->`` marker's ``body``; anything else is an error."""
    found = SKIP.match(body)
    if found is None and body.split()[:1] != ["skip"]:
        raise SnippetError(f"{where}: unknown snippet marker {body.strip()!r}; "
                           "the one marker is `<!-- snippet: skip (reason) -->`")
    if found is None or not found["reason"].strip():
        raise SnippetError(f"{where}: a snippet skip needs a reason: `<!-- snippet: skip (why it cannot run "
                           "in a test) -->`")
    return found["reason"].strip()


def check_yaml(block: Block) -> None:
    """Parse a YAML block; validate a whole recipe, or a fragment put into ``MINIMAL_RECIPE``."""
    from kdistill import load_recipe

    try:
        documents = list(yaml.safe_load_all(block.text))
    except yaml.YAMLError as error:
        pytest.fail(f"{block.id}: the YAML block does not parse: {error}", pytrace=False)
    fragment = block.first_line.startswith(FRAGMENT)
    for document in documents:
        if fragment and not isinstance(document, dict):
            pytest.fail(f"{block.id}: a `{FRAGMENT}` block must be a mapping of recipe keys, "
                        f"not {type(document).__name__}", pytrace=False)
        if fragment or (isinstance(document, dict) and "stages" in document):
            recipe = {**MINIMAL_RECIPE, **document} if fragment else document
            try:
                load_recipe(recipe)
            except Exception as error:  # any failure is the block's: name it and say what to do
                what = "the fragment, put into the minimal digits recipe," if fragment else "the recipe"
                pytest.fail(f"{block.id}: {what} fails kdistill.load_recipe: {type(error).__name__}: "
                            f"{error}\nFix the block, or {SKIP_HOW}.", pytrace=False)


# the registries a snippet may add to (a loss, a count kind, a source, a family, a model): put
# back as they were once the snippets have run, so that no later test sees a snippet's loss
REGISTRIES = [("kdistill.losses.registry", "LOSSES"), ("kdistill.losses.registry", "COUNTS"),
              ("kdistill.recipe.sources", "SOURCES"), ("kdistill.families", "FAMILIES"),
              ("kdistill.models.zoo", "MODELS")]


@contextlib.contextmanager
def registries_kept():
    """Every registry in ``REGISTRIES`` as it was on entry, again on exit."""
    import importlib

    saved = [(registry, dict(registry)) for registry in
             (getattr(importlib.import_module(module), name) for module, name in REGISTRIES)]
    try:
        yield
    finally:
        for registry, entries in saved:
            registry.clear()
            registry.update(entries)


class Timeout(Exception):
    """A Python block that ran over its time."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise ``Timeout`` in the block after ``seconds`` (SIGALRM: the main thread, Unix)."""
    def expire(signum, frame):
        raise Timeout(f"ran over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class PageRun:
    """The Python blocks of one page, run in order in one namespace in ``workdir``."""

    def __init__(self, blocks: list[Block], workdir: Path):
        self.blocks = [b for b in blocks if b.lang in PYTHON_LANGS and b.skip is None]
        self.workdir = workdir
        self.namespace = {"__name__": "__main__"}  # as a script the reader pastes it into
        self.ran = 0                        # blocks run so far, in order
        self.failed: Block | None = None

    def run(self, block: Block) -> None:
        """Run the page's Python blocks before ``block`` in order (what a YAML block names may be
        defined there), then ``block`` if it is one; fail naming the block. A YAML block is not
        failed for a Python block's failure: that one fails in its own case."""
        python = block in self.blocks
        for earlier in [b for b in self.blocks if b.line <= block.line][self.ran:]:
            if self.failed is not None:
                if not python:
                    return
                pytest.fail(f"{block.id}: not run: the page's block at {self.failed.id} failed first",
                            pytrace=False)
            self.ran += 1
            message = self.execute(earlier)
            if message is not None:
                self.failed = earlier
                if python:
                    pytest.fail(message if earlier == block else
                                f"{block.id}: not run: a block before it failed:\n{message}", pytrace=False)

    def execute(self, block: Block) -> str | None:
        """Run one block in the page's namespace and working directory; the failure's message, or None."""
        # padded so that tracebacks give the lines of the page itself
        code = compile("\n" * block.line + block.text, str(ROOT / block.page), "exec")
        output = io.StringIO()
        cwd = os.getcwd()
        try:
            os.chdir(self.workdir)
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                with time_limit(TIMEOUT_S):
                    exec(code, self.namespace)
        except BaseException as error:  # noqa: BLE001 - a block's SystemExit or Ctrl-C is its failure too
            if isinstance(error, KeyboardInterrupt):
                raise
            # the block's frames on, without this function's
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next)[-12:])
            return (f"{block.id} (python block starting {block.first_line!r}) failed: "
                    f"{type(error).__name__}: {error}\n{trace}--- its output ---\n{output.getvalue()[-3000:]}")
        finally:
            os.chdir(cwd)
        return None
