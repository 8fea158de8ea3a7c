"""The data sources a recipe's ``data.source`` names, each declared by its own module in
``kdistill/data/`` with one line::

    register_source("digits", DigitsData, tasks=("classify", "embed"), loader=load_digits_data)

``spec``: the model the recipe's ``data`` section is validated with for this source (a
``DataSpec`` subclass: the common fields, plus the option sections the source reads, e.g.
``data.images``); ``tasks``: the model families it serves, the first the recipe's default
``task``; ``loader(spec, recipe) -> (train, test)`` sources, or None for data passed from Python.

The registry sits below the schema (which looks a source up as it validates ``data``), so a
source registered later, from a user's module or a test, is validated and loaded like the
built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class SourceInfo:
    name: str
    spec: type  # a DataSpec subclass
    tasks: tuple[str, ...]
    loader: Callable[[Any, Any], tuple] | None  # (data spec, recipe) -> (train, test); None: from Python


SOURCES: dict[str, SourceInfo] = {}


def register_source(name: str, spec: type, tasks: tuple[str, ...],
                    loader: Callable[[Any, Any], tuple] | None) -> SourceInfo:
    """Declare the source ``name``: the ``data`` section's model, the families it serves (the
    first the default task) and its loader."""
    if not tasks:
        raise ValueError(f"source {name!r}: give the tasks (model families) it serves, the default first")
    SOURCES[name] = SourceInfo(name, spec, tuple(tasks), loader)
    return SOURCES[name]


def serve(task: str, *names: str) -> None:
    """Declare that the registered sources ``names`` serve ``task`` too (a model family added
    later, e.g. from a user's module, reading data the built-in sources give)."""
    for name in names:
        if name not in SOURCES:
            raise ValueError(f"serve: no data source {name!r}; registered: {', '.join(SOURCES)}")
        info = SOURCES[name]
        if task not in info.tasks:
            SOURCES[name] = SourceInfo(name, info.spec, (*info.tasks, task), info.loader)


def serving(task: str) -> list[str]:
    """The sources that serve ``task``, in the order they were registered."""
    return [name for name, info in SOURCES.items() if task in info.tasks]
