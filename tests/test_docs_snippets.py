"""Every YAML and Python snippet of the docs is checked, so that the docs and the code cannot
disagree: one case a block, named ``page:line`` (the line of its opening fence). The conventions
(what is validated, what is run, the skip marker) are in ``tests/snippets.py``; the pages of
``tests/docs_fixtures/`` hold the parser and the checks to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import snippets
from snippets import (ROOT, YAML_LANGS, PageRun, SnippetError, check_yaml, parse_blocks, parse_page,
                      registries_kept)

WORKFLOWS = ["vision", "text-encoder", "static", "causal-lm", "python", "custom-loss", "torchrun", "resume",
             "caching", "export"]
# the pages whose snippets are checked, those of them that exist (README.md joins once its
# snippets pass; every page of docs/workflows/ must be listed: test_every_workflow_page_is_listed)
PAGES = ["README.md", "docs/index.md", "docs/getting-started.md", *(f"docs/workflows/{name}.md" for name in WORKFLOWS)]
FIXTURES = ROOT / "tests" / "docs_fixtures"


def cases(pages: list[str]) -> list:
    """One pytest case per checked block of each existing page; a page that breaks the
    conventions is one failing case named by the line of the problem."""
    params = []
    for page in pages:
        path = ROOT / page
        if not path.exists():
            continue
        try:
            blocks = parse_page(path)
        except SnippetError as error:
            params.append(pytest.param(str(error), id=str(error).split(": ")[0]))
            continue
        params += [pytest.param(block, id=block.id) for block in blocks if block.checked]
    return params


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    """``page_runs(page)``: the page's ``PageRun`` (one namespace and working directory a page),
    kept across the page's cases so that its blocks run in order."""
    runs = {}

    def get(page: str) -> PageRun:
        if page not in runs:
            workdir = tmp_path_factory.mktemp(Path(page).stem)
            runs[page] = PageRun(parse_page(ROOT / page), workdir)
        return runs[page]
    with registries_kept():
        yield get


@pytest.fixture(autouse=True)
def snippet_env(monkeypatch):
    """What a snippet may not reach from a test: the Hugging Face hub, a display."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def check_block(block, page_runs) -> None:
    if isinstance(block, str):  # the page broke a convention
        pytest.fail(block, pytrace=False)
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    page_runs(block.page).run(block)  # the Python blocks before it, and it if it is one
    if block.lang in YAML_LANGS:
        check_yaml(block)


@pytest.mark.parametrize("block", cases(PAGES))
def test_snippet(block, page_runs):
    check_block(block, page_runs)


def test_every_workflow_page_is_listed():
    listed = set(PAGES)
    unlisted = [page_name for page_name in (str(p.relative_to(ROOT)) for p in (ROOT / "docs/workflows").glob("*.md"))
                if page_name not in listed]
    assert not unlisted, f"add these pages to PAGES in {Path(__file__).name}: {unlisted}"


# --- the parser and the checks, on the fixture pages ------------------------------------------

@pytest.mark.parametrize("block", cases(["tests/docs_fixtures/conventions.md"]))
def test_conventions_page(block, page_runs):
    """The page that uses every convention passes, case by case (the skipped block skips)."""
    check_block(block, page_runs)


def test_parser_finds_every_block():
    blocks = parse_page(FIXTURES / "conventions.md")
    seen = [(b.lang, b.skip, b.first_line) for b in blocks]
    assert seen == [
        ("bash", None, "kdistill run recipes/digits_quick.yaml"),
        ("yaml", None, "name: whole"),
        ("yaml", None, "# recipe fragment: put into the minimal digits recipe"),
        ("yml", None, "data:"),
        ("python", None, "from pathlib import Path"),
        ("python", "shows a failure on purpose", 'raise RuntimeError("a skipped block is never run")'),
        ("python", None, "y = x * 3"),
        ("markdown", None, "A fence inside a longer fence is its content:"),
        ("python", None, "import os"),
    ]
    assert [b.id for b in blocks][:2] == ["tests/docs_fixtures/conventions.md:5",
                                          "tests/docs_fixtures/conventions.md:12"]
    indented = blocks[6]
    assert indented.text == "y = x * 3\n"  # the list's indentation removed


def test_skip_without_reason_is_refused():
    with pytest.raises(SnippetError, match=r"skip_without_reason.md:3: a snippet skip needs a reason"):
        parse_page(FIXTURES / "skip_without_reason.md")
    broken = cases(["tests/docs_fixtures/skip_without_reason.md"])
    assert [p.id for p in broken] == ["tests/docs_fixtures/skip_without_reason.md:3"]  # a failing case


@pytest.mark.parametrize("text, problem", [
    ("<!-- snippet: skip () -->\n```python\n1\n```\n", "page.md:1: a snippet skip needs a reason"),
    ("<!-- snippet: run -->\n```python\n1\n```\n", "page.md:1: unknown snippet marker 'run'"),
    ("<!-- snippet: skip (x) -->\ntext\n```python\n1\n```\n", "page.md:1: the snippet marker is followed by text"),
    ("text\n<!-- snippet: skip (x) -->\n", "page.md:2: the snippet marker is followed by no fence"),
    ("```python\n1\n", "page.md:1: the fence ``` is never closed"),
])
def test_marker_and_fence_errors(text, problem):
    with pytest.raises(SnippetError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_blocks(text, "page.md")


def test_a_marker_inside_a_fence_or_in_prose_is_text():
    text = ("Put `<!-- snippet: skip (reason) -->` before it:\n\n~~~markdown\n<!-- snippet: skip -->\n~~~\n"
            "\n```python\nz = 1\n```\n")
    assert [(b.lang, b.skip) for b in parse_blocks(text, "page.md")] == [("markdown", None), ("python", None)]


def test_broken_yaml_fails():
    [block] = parse_page(FIXTURES / "broken_yaml.md")
    with pytest.raises(pytest.fail.Exception, match=r"broken_yaml.md:3: the YAML block does not parse"):
        check_yaml(block)


def test_a_recipe_that_load_recipe_refuses_fails():
    whole, fragment = parse_page(FIXTURES / "bad_recipe.md")
    with pytest.raises(pytest.fail.Exception, match=r"bad_recipe.md:3: the recipe fails kdistill.load_recipe: "
                                                    r"(?s:.*)epocs(?s:.*)snippet: skip \(reason\)"):
        check_yaml(whole)
    with pytest.raises(pytest.fail.Exception, match=r"bad_recipe.md:12: the fragment, put into the minimal digits "
                                                    r"recipe, fails kdistill.load_recipe(?s:.*)labeled"):
        check_yaml(fragment)


def test_a_python_block_that_raises_fails_naming_page_and_line(tmp_path):
    first, raising, after = parse_page(FIXTURES / "raising_python.md")
    run = PageRun([first, raising, after], tmp_path)
    with pytest.raises(pytest.fail.Exception) as failure:
        run.run(raising)  # runs the first block, then this one
    message = str(failure.value)
    assert message.startswith("tests/docs_fixtures/raising_python.md:7 (python block starting 'value += 1') "
                              "failed: ValueError: planted failure, value 2")
    assert f'File "{FIXTURES / "raising_python.md"}", line 9' in message  # the page's own line
    with pytest.raises(pytest.fail.Exception, match=r"raising_python.md:12: not run: the page's block at "
                                                    r"tests/docs_fixtures/raising_python.md:7 failed first"):
        run.run(after)


def test_a_block_that_fails_before_the_asked_one_names_both(tmp_path):
    blocks = parse_page(FIXTURES / "raising_python.md")
    with pytest.raises(pytest.fail.Exception, match=r"raising_python.md:12: not run: a block before it "
                                                    r"failed:\ntests/docs_fixtures/raising_python.md:7"):
        PageRun(blocks, tmp_path).run(blocks[2])


def test_a_python_block_that_runs_too_long_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(snippets, "TIMEOUT_S", 0.3)
    [block] = parse_page(FIXTURES / "slow_python.md")
    with pytest.raises(pytest.fail.Exception, match=r"slow_python.md:3 \(python block starting 'while True:'\) "
                                                    r"failed: Timeout: ran over 0.3 s"):
        PageRun([block], tmp_path).run(block)


def test_a_loss_a_snippet_registers_is_gone_after(tmp_path):
    from kdistill.losses.registry import LOSSES

    [block] = parse_blocks("```python\nfrom torch import nn\nfrom kdistill.losses.registry import register\n"
                           "register('snippet_loss')(type('SnippetLoss', (nn.Module,), {}))\n```\n", "page.md")
    with registries_kept():
        PageRun([block], tmp_path).run(block)
        assert "snippet_loss" in LOSSES
    assert "snippet_loss" not in LOSSES


def test_a_yaml_block_is_checked_after_a_python_block_failed(tmp_path):
    text = "```python\nraise ValueError('planted')\n```\n\n```yaml\nstages: [oops\n```\n"
    raising, broken = parse_blocks(text, "page.md")
    run = PageRun([raising, broken], tmp_path)
    run.run(broken)  # the Python block before it runs and fails, in its own case
    assert run.failed == raising
    with pytest.raises(pytest.fail.Exception, match=r"page.md:5: the YAML block does not parse"):
        check_yaml(broken)
