"""The shape of the package (docs/architecture.md), checked from the source."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdistill"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The kdistill modules ``name`` imports anywhere in its source (module level or inside
    functions): ``from a.b import c`` names module ``a.b.c`` when it is one, else ``a.b``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = imported_from(node, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def imported_from(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, relative ones resolved against ``package``."""
    base = node.module or ""
    if not node.level:
        return base
    parts = package.split(".")
    return ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    assert sum(map(len, graph.values())) > 50  # the graph was read (a parser that finds nothing passes nothing)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_count():
    assert "kdistill.data.text_sources" in imports_of("kdistill.data.preprocess")  # imported inside input_steps


# The layers, earliest first: a module imports only modules of its own layer or of earlier ones
# (docs/architecture.md says what each layer is). A pattern ``a.b.*`` names the package ``a.b``
# and every module under it; any other pattern names one module. Every module is in one layer.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["kdistill.errors", "kdistill.paths", "kdistill.distributed", "kdistill.fewshot",
              "kdistill.closeness", "kdistill.progress"]),
    ("schema", ["kdistill.recipe.sources", "kdistill.recipe.schema", "kdistill.recipe.load"]),
    ("data", ["kdistill.data.*"]),
    ("models", ["kdistill.models.*"]),
    ("losses", ["kdistill.losses.*"]),
    ("objective", ["kdistill.objective.*"]),
    ("train", ["kdistill.train.*"]),
    ("evaluate", ["kdistill.evaluate", "kdistill.evaluate.metrics", "kdistill.evaluate.embedding",
                  "kdistill.evaluate.lm", "kdistill.evaluate.teacher_check"]),
    ("report", ["kdistill.rundir", "kdistill.evaluate.report", "kdistill.evaluate.plots"]),
    ("export", ["kdistill.export.*"]),
    ("families", ["kdistill.families"]),
    ("entry", ["kdistill", "kdistill.__main__", "kdistill.recipe", "kdistill.recipe.checks", "kdistill.pipeline",
               "kdistill.precompute", "kdistill.rebuild", "kdistill.runner", "kdistill.cli", "kdistill.init",
               "kdistill.catalogue"]),
]

# Edges against the order, each explained in docs/architecture.md: none.
KNOWN: set[tuple[str, str]] = set()


def in_pattern(name: str, pattern: str) -> bool:
    """Whether module ``name`` is one that ``pattern`` names (see LAYERS)."""
    if pattern.endswith(".*"):
        return name == pattern[:-2] or fnmatch.fnmatchcase(name, pattern)
    return name == pattern


def layers_of(name: str, layers=LAYERS) -> list[int]:
    """The positions in ``layers`` of every layer a pattern of which names module ``name``."""
    return [i for i, (_, patterns) in enumerate(layers) if any(in_pattern(name, p) for p in patterns)]


def back_edges(graph: dict[str, set[str]], layers=LAYERS) -> list[tuple[str, str]]:
    """Every import ``(a, b)`` of ``graph`` (module -> the modules it imports) from a module into a
    module of a later layer, sorted (a module in no layer is left to
    test_every_module_is_in_exactly_one_layer)."""
    level = {name: found[0] for name in graph if (found := layers_of(name, layers))}
    return sorted((a, b) for a, imported in graph.items() for b in imported
                  if a in level and b in level and level[b] > level[a])


def edge_shown(a: str, b: str) -> str:
    """``a (its layer) -> b (its layer)``."""
    return f"{a} ({LAYERS[layers_of(a)[0]][0]}) -> {b} ({LAYERS[layers_of(b)[0]][0]})"


def test_every_module_is_in_exactly_one_layer():
    placed = {name: [LAYERS[i][0] for i in layers_of(name)] for name in MODULES}
    wrong = {name: found for name, found in placed.items() if len(found) != 1}
    assert not wrong, f"modules in no layer or in several (add them to LAYERS once): {wrong}"


def test_no_module_imports_a_later_layer():
    found = [edge_shown(a, b) for a, b in back_edges({name: imports_of(name) for name in MODULES})
             if (a, b) not in KNOWN]
    assert not found, ("imports from a layer into a later one (move what is needed down, or the importer "
                       "up; docs/architecture.md lists the layers): " + "; ".join(found))


def test_every_known_exception_is_still_an_import():
    """An exception that no longer happens is dropped from KNOWN, so that it cannot come back unseen."""
    edges = set(back_edges({name: imports_of(name) for name in MODULES}))
    assert not sorted(KNOWN - edges), f"KNOWN edges that are gone: {sorted(KNOWN - edges)}"


def test_the_layer_check_finds_a_back_edge():
    layers = [("low", ["p.low.*"]), ("high", ["p.high", "p.top"])]
    graph = {"p.low": set(), "p.low.a": {"p.low"}, "p.low.b": {"p.high"}, "p.high": {"p.low.a"}, "p.top": {"p.high"}}
    assert back_edges(graph, layers) == [("p.low.b", "p.high")]
    assert layers_of("p.low.a.deep", layers) == [0] and layers_of("p.lower", layers) == []
    assert layers_of("kdistill.data") == layers_of("kdistill.data.load") == [2]  # a package is in its layer
    assert edge_shown("kdistill.data.load", "kdistill.recipe") == "kdistill.data.load (data) -> kdistill.recipe (entry)"


def private_imports(name: str, source: str) -> list[str]:
    """The private names (``_x``, not ``__x__``) that module ``name`` imports from another kdistill
    module in ``source``, as ``name:line imports module._x``."""
    package = name if MODULES.get(name, Path()).name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = imported_from(node, package)
        if base.split(".")[0] != "kdistill" or base == name:
            continue
        found += [f"{name}:{node.lineno} imports {base}.{a.name}" for a in node.names
                  if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__"))]
    return found


def test_no_private_name_crosses_a_module():
    found = [f for name, path in MODULES.items() for f in private_imports(name, path.read_text(encoding="utf8"))]
    assert not found, f"private names imported from another module (make them public, with a docstring): {found}"


def test_the_private_name_check_finds_one():
    source = ("from kdistill.models.hf import _pretrained, resolve_path\nfrom kdistill.paths import __doc__\n"
              "from .text import _open_text\nfrom torch import _C\n")
    assert private_imports("kdistill.data.lm_text", source) == [
        "kdistill.data.lm_text:1 imports kdistill.models.hf._pretrained",
        "kdistill.data.lm_text:3 imports kdistill.data.text._open_text"]


# the modules that must stay generic: they name no registered loss, feature or model family
GENERIC = ["kdistill.train.loop", "kdistill.train.fit", "kdistill.runner"]


def _identifiers_and_strings(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.rpartition(".")[2])
    return names


def _specific_names() -> set[str]:
    from kdistill.families import FAMILIES
    from kdistill.losses import LOSSES
    from kdistill.objective.build import PROVIDERS
    from kdistill.objective.shallow import EMBEDDING, PROTOTYPES

    named = set(LOSSES) | {r.cls.__name__ for r in LOSSES.values()}
    named |= set(FAMILIES) | {type(f).__name__ for f in FAMILIES.values()}
    named |= {EMBEDDING, PROTOTYPES, "WEIGHTS", "HFEncoder", "ShallowSpace", "PrototypeHead", "PCAProjection"}
    named |= {make.__self__.__name__ for make in PROVIDERS}
    return named


@pytest.mark.parametrize("module", GENERIC)
def test_the_loop_and_the_runner_name_no_loss_feature_or_family(module):
    specific = _specific_names()
    assert {"kd", "crd", "l2_start", "embedding", "classify", "Encoder"} <= specific
    found = _identifiers_and_strings(MODULES[module]) & specific
    assert not found, f"{module} names {sorted(found)}: move that case into its loss, provider or family"


def test_the_check_sees_a_name():
    assert "kd" in _identifiers_and_strings(MODULES["kdistill.losses.kd"])


def test_every_job_and_bench_builds_through_the_builder():
    """run, cache, eval, export and the benches reach models and data through build_pipeline
    (or kdistill.run, which calls it); none builds them by hand."""
    by_hand = ("build_models(", "prepare_data(", "build_stage_objectives(", "build_providers(")
    users = [PACKAGE / "runner.py", PACKAGE / "precompute.py", PACKAGE / "rebuild.py",
             *sorted((ROOT / "bench").glob("*.py"))]
    for path in users:
        text = path.read_text(encoding="utf8")
        assert not [b for b in by_hand if b in text], f"{path.name} builds by hand"
    for path in users[:3]:
        assert "build_pipeline(" in path.read_text(encoding="utf8"), path.name


def test_every_module_has_a_test_file():
    """Tests mirror the package: kdistill/a/b.py is tested in tests/a/test_b.py (or tests/test_b.py)."""
    untested = []
    for name, path in MODULES.items():
        if path.name in ("__init__.py", "__main__.py") or name in ("kdistill.errors",):
            continue
        rel = path.relative_to(PACKAGE)
        candidates = [ROOT / "tests" / rel.parent / f"test_{rel.name}", ROOT / "tests" / f"test_{rel.name}"]
        if not any(c.is_file() for c in candidates):
            untested.append(str(rel))
    assert not untested, f"modules without a test file: {untested}"


def text_opened_without_encoding(source: str) -> list[int]:
    """The lines of ``source`` that open a text file in the locale's encoding: ``open``,
    ``Path.open``, ``read_text`` or ``write_text`` without ``encoding=`` (``open`` in a binary
    mode, PIL's ``Image.open`` or ``os.open`` (a descriptor), reads bytes and is left alone)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        name = ast.unparse(node.func).rpartition(".")[2]
        modes = [a.value for a in [*node.args, *(k.value for k in node.keywords if k.arg == "mode")]
                 if isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) <= set("rwxabt+")]
        # os.open gives a descriptor (bytes); os.fdopen over it is a call of another name
        binary = any("b" in m for m in modes) or ast.unparse(node.func) in ("Image.open", "os.open")
        if name in ("read_text", "write_text") or (name == "open" and not binary):
            found.append(node.lineno)
    return sorted(found)


def test_every_text_file_the_package_opens_names_its_encoding():
    """Run folders, reports and caches are UTF-8 on every machine: in the locale's encoding, a
    latin-1 or ASCII locale fails on the report's arrows or writes bytes that other machines misread."""
    found = [f"{name}:{line}" for name, path in MODULES.items()
             for line in text_opened_without_encoding(path.read_text(encoding="utf8"))]
    assert not found, f"text files opened without encoding=\"utf8\": {found}"


def test_the_encoding_check_sees_a_text_file():
    source = ("p.write_text('a')\nopen(p, 'rb')\nImage.open(p)\np.open('a', encoding='utf8')\n"
              "open(p)\np.open(mode='w')\nx = p.read_text(errors='replace')\n")
    assert text_opened_without_encoding(source) == [1, 5, 6, 7]


MAX_FUNCTION_LINES = 60  # a function longer than this is split into named steps


def long_functions(source: str, where: str) -> list[str]:
    """The functions (methods and nested ones included) of ``source`` over ``MAX_FUNCTION_LINES``
    lines, decorators and docstring counted."""
    return [f"{where}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_over_60_lines():
    found = [hit for name, path in MODULES.items()
             for hit in long_functions(path.read_text(encoding="utf8"), name)]
    assert not found, f"split these into named steps: {found}"


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n", "m") == [f"m:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions("def f():\n    return 1\n", "m") == []
