"""The shape of the package (docs/architecture.md), checked from the source."""

from __future__ import annotations

import ast
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
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


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
