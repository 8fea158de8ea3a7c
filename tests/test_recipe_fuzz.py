"""Property-based: any recipe, however mangled, loads as a Recipe or fails with the project's
own one-line error, never another exception."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdistill.cli import demo_recipe
from kdistill.errors import KDistillError
from kdistill.recipe import Recipe, load_recipe

BASE = yaml.safe_load(demo_recipe().read_text())
BASE["teacher"]["weights"] = None  # the file is resolved relative to the recipe; not needed to validate

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _paths(tree, prefix=()):
    """Every (path, value) in a nested dict/list tree."""
    yield prefix, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


ALL_PATHS = [p for p, _ in _paths(BASE) if p]


def _loads_or_fails_cleanly(tree):
    try:
        assert isinstance(load_recipe(tree), Recipe)
    except KDistillError as err:
        message = str(err)
        assert message and "\n" not in message.strip()  # one line


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_demo_recipe(data):
    tree = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(ALL_PATHS))
        parent = tree
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = data.draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = data.draw(values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[data.draw(st.text(max_size=8))] = data.draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    _loads_or_fails_cleanly(tree)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_random_recipe(tree):
    _loads_or_fails_cleanly(tree)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_random_override(text):
    try:
        load_recipe(copy.deepcopy(BASE), [text])
    except KDistillError as err:
        assert "\n" not in str(err).strip()
