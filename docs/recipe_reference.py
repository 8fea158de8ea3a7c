"""Writes docs/reference/recipe.md from the recipe's pydantic schema (``kdistill/recipe/schema.py``)
and the data sources' specs (``kdistill/recipe/sources.SOURCES``): every field's dotted key, type,
default, allowed values and description, and the sources (and so the model families) each ``data``
option applies to.

    python docs/recipe_reference.py          # rewrite the page
    python docs/recipe_reference.py --check  # exit 1 when the page differs from the schema

tests/test_docs_site.py fails when a field has no description or the page is out of date.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

import kdistill.data  # noqa: F401  (registers the built-in sources)
from kdistill.recipe.schema import DataSpec, Recipe, Section
from kdistill.recipe.sources import SOURCES

PAGE = Path(__file__).resolve().parent / "reference" / "recipe.md"


def builtin_sources() -> dict:
    """The sources the package registers itself (a test or a user may register more)."""
    return {name: info for name, info in SOURCES.items() if info.spec.__module__.startswith("kdistill.")}


def unwrap(annotation):
    """The model a field holds (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``) and the key
    suffix it adds (``""``, ``"[]"``, ``".<name>"``); (None, "") for a plain value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    if origin in (typing.Union, types.UnionType):
        models = [unwrap(a) for a in args if a is not type(None)]
        return models[0] if len(models) == 1 else (None, "")
    if origin is list and args:
        model, _ = unwrap(args[0])
        return (model, "[]") if model else (None, "")
    if origin is dict and len(args) == 2:
        model, _ = unwrap(args[1])
        return (model, ".<name>") if model else (None, "")
    if origin is not None and hasattr(annotation, "__origin__") and args:  # SerializeAsAny[X] and the like
        return unwrap(args[0])
    return None, ""


def type_name(annotation) -> str:
    """A field's type as a recipe writer reads it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(sorted({type_name(type(a)) if a is not False else "false" for a in args}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_name(a) for a in args))
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is tuple:
        return f"[{', '.join(type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping[{type_name(args[0])}, {type_name(args[1])}]" if args else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if origin is not None and args:
        return type_name(args[0])
    return {str: "str", int: "int", float: "float", bool: "bool", typing.Any: "any"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def value(obj) -> str:
    """A default as YAML would spell it."""
    if isinstance(obj, BaseModel):
        return value(obj.model_dump(exclude_defaults=True))
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(value(item) for item in obj) + "]"
    return json.dumps(obj).replace('"', "")


def default_of(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    found = field.get_default(call_default_factory=True)
    if isinstance(found, BaseModel) and not found.model_dump(exclude_defaults=True):
        return "(its defaults)"
    return value(found)


def allowed(field: FieldInfo) -> str:
    """Literal choices and numeric bounds."""
    found = []
    literal = [a for a in (field.annotation,) + typing.get_args(field.annotation)
               if typing.get_origin(a) is typing.Literal]
    for lit in literal:
        found += [value(a) for a in typing.get_args(lit)]
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for meta in field.metadata:
        for attr, sign in signs.items():
            if isinstance(meta, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)) \
                    and hasattr(meta, attr):
                found.append(f"{sign} {getattr(meta, attr)}")
        if isinstance(meta, annotated_types.MinLen):
            found.append(f"at least {meta.min_length}")
    return ", ".join(found)


def cell(text: str) -> str:
    """Text safe in a Markdown table cell (no pipes, no HTML tags, no code of reST)."""
    return text.replace("``", "`").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def rows(model: type[BaseModel], prefix: str, skip=()) -> list[tuple[str, FieldInfo]]:
    """(dotted key, field) of ``model`` and of the sections below it, depth first."""
    found = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        found.append((key, field))
        inner, suffix = unwrap(field.annotation)
        if inner is not None and not issubclass(inner, DataSpec):
            found += rows(inner, f"{key}{suffix}.")
    return found


def table(entries: list[tuple[str, FieldInfo, str]], applies: bool) -> list[str]:
    head = ["key", "type", "default", "allowed", "description"] + (["sources (families)"] if applies else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, field, where in entries:
        row = [f"`{key}`", type_name(field.annotation), f"`{default_of(field)}`", allowed(field),
               field.description or ""]
        lines.append("| " + " | ".join(cell(c) if i else c for i, c in enumerate(row + ([where] if applies else [])))
                     + " |")
    return lines


def data_options(sources: dict) -> list[tuple[str, FieldInfo, str]]:
    """Every ``data.<section>.<field>`` a source reads, once per distinct field, with its readers."""
    seen: dict[tuple, list[str]] = {}
    fields: dict[tuple, tuple[str, FieldInfo]] = {}
    for name, info in sources.items():
        for key, field in rows(info.spec, "data.", skip=DataSpec.model_fields):
            ident = (key, type_name(field.annotation), default_of(field), allowed(field), field.description)
            seen.setdefault(ident, []).append(name)
            fields.setdefault(ident, (key, field))
    entries = []
    for ident, readers in sorted(seen.items(), key=lambda item: item[0][0]):
        key, field = fields[ident]
        where = ", ".join(f"{r} ({', '.join(sources[r].tasks)})" for r in readers)
        entries.append((key, field, where))
    return entries


def source_table(sources: dict) -> list[str]:
    lines = ["| source | families (the default first) | option sections | what it reads |", "|---|---|---|---|"]
    for name, info in sources.items():
        sections = [f"`data.{k}`" for k, f in info.spec.model_fields.items()
                    if k not in DataSpec.model_fields and isinstance(f.annotation, type)
                    and issubclass(f.annotation, Section)]
        doc = " ".join((info.spec.__doc__ or "").split())
        lines.append(f"| `{name}` | {', '.join(info.tasks)} | {', '.join(sections) or '(none)'} | {cell(doc)} |")
    return lines


def page() -> str:
    sources = builtin_sources()
    top = [(k, f) for k, f in rows(Recipe, "") if k == "data" or not k.startswith("data")]
    sections: dict[str, list] = {"": []}
    for key, field in top:
        head = key.split(".")[0].split("[")[0]
        nested = unwrap(Recipe.model_fields[head].annotation)[0] is not None
        sections.setdefault(head if nested else "", []).append((key, field, ""))
    out = ["# Recipe reference", "",
           "Every key a recipe may set, generated from the schema (`kdistill/recipe/schema.py`) and the data",
           "sources' specs by `python docs/recipe_reference.py`; do not edit by hand. A key `a[].b` is the",
           "field `b` of each item of the list `a`; `teachers.<name>.model` is a field of each extra teacher.",
           "A `section` defaults to its own fields' defaults.", "",
           "## Top level", "", *table(sections.pop(""), False), "",
           "## Data sources", "",
           "`data.source` names one of these; `task` defaults to the first family it serves.", "",
           *source_table(sources), "",
           "## data", "",
           "The fields every source shares (a source may refuse one it has no use for, e.g. `data.path` for",
           "`digits`):", "",
           *table([(k, f, "") for k, f in rows(DataSpec, "data.")], False), "",
           "### Source options", "",
           "Each option applies to the sources listed; set for another source (to other than its default),",
           "it is refused, naming the sources that read it.", "",
           *table(data_options(sources), True), ""]
    sections.pop("data")
    for head, entries in sections.items():
        out += [f"## {head}", "", *table(entries, False), ""]
    return "\n".join(out)


def missing_descriptions() -> list[str]:
    """Keys of the schema and of the built-in sources' specs without a description."""
    keys = [k for k, f in rows(Recipe, "") if not f.description]
    for info in builtin_sources().values():
        keys += [f"{k} ({info.name})" for k, f in rows(info.spec, "data.") if not f.description]
    return keys


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        sys.exit(0 if PAGE.read_text(encoding="utf8") == page() else 1)
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page(), encoding="utf8")
    print(f"wrote {PAGE}")
