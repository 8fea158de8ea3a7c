"""Reading a recipe: YAML within limits, ``key.sub=value`` overrides, validation against the
schema with the first problem as one line, and the resolved recipe written back as YAML."""

from __future__ import annotations

import copy
import difflib
import itertools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdistill.errors import KDistillError, cut, shown
from kdistill.paths import user_path
from kdistill.recipe.schema import DEFAULT_SOURCE, DataSpec, Recipe, located


def _valid_keys(model: type[BaseModel], loc: tuple, tree: Any = None) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown key) of the raw ``tree``: the
    ``data`` section's are those of its source's spec."""
    current: Any = model
    node = tree
    for part in loc:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        for a in list(candidates):
            candidates += list(getattr(a, "__args__", ()) or ())
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is DataSpec:
            current = DataSpec.for_source(node.get("source", DEFAULT_SOURCE) if isinstance(node, dict) else None)
    return list(current.model_fields) if current is not None else []


def _has(node: dict | list, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and -len(node) <= part < len(node)


def _format_error(err: ValidationError, tree: Any = None) -> str:
    # a misspelt key also makes its correct spelling "missing": report the misspelling
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    raw = tuple(first["loc"])
    # pydantic adds the union member it tried ("list[int]", "function-after[...]") to the path;
    # the last part of an unknown key's path is the user's own key, whatever it holds
    keep_last = first["type"] == "extra_forbidden" and raw
    loc = tuple(p for p in raw[:-1 if keep_last else None] if not (isinstance(p, str) and "[" in p))
    loc += raw[-1:] if keep_last else ()
    where = ".".join(cut(str(p)) for p in loc) or "recipe"  # keys shortened too
    if first["type"] == "extra_forbidden":  # the key is named; its value, however big, is not looked at
        valid = _valid_keys(Recipe, loc[:-1], tree)
        key = str(loc[-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5) if len(key) <= 100 else []
        fix = f"did you mean {shown(close[0])}?" if close else f"valid keys: {', '.join(valid)}"
        return f"recipe: unknown key {shown(where)}; {fix}"
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {shown(first['input'])})" if first["type"] not in ("missing",) and "input" in first and not isinstance(first["input"], dict) else ""
    return f"recipe: {where}: {message}{got}" if loc else f"recipe: {message}{got}"


def located_error(loc: tuple, message: str, value: Any = None) -> KDistillError:
    """A problem found after validation (``recipe/checks.py``), at ``loc`` in the recipe, worded as
    a validation error there would be: ``value`` echoed as ``(got ...)`` unless it is None (a
    section, whose dict is never echoed)."""
    return KDistillError(_format_error(located(loc, message, value)))


def parse_override(text: str) -> tuple[list[str], Any]:
    if len(text) > MAX_OVERRIDE_CHARS:
        raise KDistillError(f"override {shown(text)}: {len(text):,} characters, over the {MAX_OVERRIDE_CHARS:,} an "
                            "override may have; set a big value in the recipe file")
    if "=" not in text:
        raise KDistillError(f"override {shown(text)}: write it as key.sub=value, e.g. stages.distil.epochs=3")
    key, _, raw = text.partition("=")
    if key.count(".") >= MAX_DEPTH:
        raise KDistillError(f"override {shown(text)}: a key of more than {MAX_DEPTH} parts; a recipe nests a few")
    try:
        value = read_yaml(raw, f"override {shown(text)}") if raw else None
    except _NotYaml:
        value = raw
    return key.strip().split("."), value


def apply_override(tree: dict, text: str) -> None:
    """Set ``key.sub=value`` in a raw recipe tree. List items are addressed by index or by name."""
    path, value = parse_override(text)
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            index = _list_index(node, part, text)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise KDistillError(f"override {shown(text)}: {cut('.'.join(path[:i]))} is not a section")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:  # an absent or empty section
                node[part] = {}
            node = node[part]


def _list_index(items: list, part: str, text: str) -> int:
    if part.lstrip("-").isdigit() and -len(items) <= int(part) < len(items):
        return int(part)
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name", item.get("loss")) == part:
            return index
    names = [str(it.get("name", it.get("loss"))) for it in items if isinstance(it, dict)]
    raise KDistillError(f"override {shown(text)}: no item {shown(part)}; use an index or one of {shown(names, 200)}")


def validate(tree: dict) -> Recipe:
    """Validate a raw recipe tree; the first problem becomes a one-line ``KDistillError``."""
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise KDistillError(_format_error(err, tree)) from None


def read_tree(source: str | Path | dict | Recipe, overrides: list[str] = ()) -> dict:
    """The raw recipe tree of a YAML file, a dict or a Recipe, with the overrides applied.

    Relative weight paths in a file are resolved against the file's folder.
    """
    if isinstance(source, Recipe):
        tree = source.model_dump()
    elif isinstance(source, dict):
        _check_values(source)  # before copying it
        tree = copy.deepcopy(source)
    else:
        path = user_path(source, "recipe")
        tree = read_recipe_file(path) or {}
        if not isinstance(tree, dict):
            raise KDistillError(f"recipe: {path} must hold a mapping of keys at the top level.")
        _resolve_weight_paths(tree, path.parent)
    for text in overrides:
        apply_override(tree, text)
    return tree


def read_recipe_file(path: Path) -> Any:
    """The YAML tree of a recipe file, read within the limits: at most MAX_RECIPE_BYTES, and at
    most MAX_VALUES values once its aliases are expanded."""
    if path.is_dir():
        raise KDistillError(f"recipe: {path} is a folder; give the path to a .yaml recipe.")
    if not path.is_file():
        raise KDistillError(f"recipe: file {path} not found; give the path to a .yaml recipe.")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:  # before reading it: a recipe is a few KB
        raise KDistillError(f"recipe: {path} is {size:,} bytes, over the {MAX_RECIPE_BYTES:,} a recipe may have; "
                            "give the path to a .yaml recipe (data goes in files the recipe names)")
    with path.open("rb") as file:
        data = file.read(MAX_RECIPE_BYTES + 1)  # the file may have grown since
    if len(data) > MAX_RECIPE_BYTES:
        raise KDistillError(f"recipe: {path} is over the {MAX_RECIPE_BYTES:,} bytes a recipe may have; "
                            "give the path to a .yaml recipe (data goes in files the recipe names)")
    try:
        return read_yaml(data.decode("utf8"), f"recipe: {path}")
    except UnicodeDecodeError:
        raise KDistillError(f"recipe: {path} is not a text file; give the path to a .yaml recipe.") from None
    except _NotYaml as err:
        raise KDistillError(f"recipe: {path} is not valid YAML: {err}") from None


# a recipe is a few KB holding a few hundred values: these limits are far above any real one,
# and far below what takes time or memory to read, validate or echo
MAX_RECIPE_BYTES = 1 << 20
MAX_OVERRIDE_CHARS = 10_000
MAX_VALUES = 5_000  # scalars, lists and mappings, aliases expanded (YAML reads 5,000 in half a second)
MAX_DEPTH = 50  # lists and mappings inside each other (a recipe nests 6 deep; Python recursion ends near 1000)


class _NotYaml(Exception):
    """The text is not YAML (the message: the parser's first line, shortened)."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml's SafeLoader, counting the values the document expands to as it composes it: an
    alias counts as the whole block it repeats, so an alias bomb (levels of ``&a [*b, *b, ...]``,
    a few lines expanding to billions of values for whatever walks it) is refused as soon as
    the count passes ``MAX_VALUES``, and an alias inside the block it names (a cycle) at once."""

    def __init__(self, stream):
        super().__init__(stream)
        self.values = self.depth = 0
        self.sizes: dict[int, tuple[yaml.Node, int]] = {}  # id(node) -> (node, values it expands to)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self.sizes:
                    raise _TooBig(f"the alias *{cut(event.anchor)} is inside the block it names, a cycle; "
                                  "write the value out")
                self._count(self.sizes[id(target)][1])
            return super().compose_node(parent, index)
        before = self.values
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _TooBig(f"nests lists and mappings more than {MAX_DEPTH} levels deep; a recipe nests a few")
        node = super().compose_node(parent, index)
        self.depth -= 1
        self._count(1)
        self.sizes[id(node)] = (node, self.values - before)
        return node

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise _TooBig(f"holds more than {MAX_VALUES:,} values (each use of a YAML alias counted as the "
                          "block it repeats); a recipe holds a few hundred: write it out plainly")


class _TooBig(Exception):
    pass


def read_yaml(text: str, what: str) -> Any:
    """``text`` as a YAML tree, within ``MAX_VALUES``; ``what`` names it in the error."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters already
        return loader.get_single_data()
    except _TooBig as err:
        raise KDistillError(f"{what}: {err}") from None
    # what YAML's constructors raise on a bad scalar: an integer of more than 4300 digits, a date
    # 2001-13-01 (ValueError), a '!!timestamp' tag on a non-date (AttributeError)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as err:
        raise _NotYaml(cut(str(err).splitlines()[0], 200) if str(err) else type(err).__name__) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_values(tree: Any) -> None:
    """A recipe given as a dict holds at most MAX_VALUES values (a list or mapping shared by
    several keys counted at each): counted up to the limit, never walked whole."""
    count, todo = 0, [iter([tree])]
    while todo:
        value = next(todo[-1], todo)  # the list itself: this level is done
        if value is todo:
            todo.pop()
            continue
        count += 1
        if count > MAX_VALUES:
            raise KDistillError(f"recipe: holds more than {MAX_VALUES:,} values; a recipe holds a few hundred "
                                "(data is passed as run(recipe, data=...) or named by data.path)")
        if len(todo) > MAX_DEPTH:
            raise KDistillError(f"recipe: nests lists and mappings more than {MAX_DEPTH} levels deep; a recipe "
                                "nests a few")
        if isinstance(value, dict):
            todo.append(itertools.chain.from_iterable(value.items()))
        elif isinstance(value, (list, tuple)):
            todo.append(iter(value))


def _resolve_weight_paths(tree: dict, folder: Path) -> None:
    extras = tree.get("teachers") if isinstance(tree.get("teachers"), dict) else {}
    for spec in [tree.get("teacher"), tree.get("student"), *extras.values()]:
        if isinstance(spec, dict) and isinstance(spec.get("weights"), str):
            weights = Path(spec["weights"])
            if not weights.is_absolute():
                spec["weights"] = str((folder / weights).resolve())


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
