"""The schema alone: pure pydantic, no registry read, so a loss name is not judged here."""

import ast
from pathlib import Path

import kdistill.recipe.schema as schema
from kdistill.recipe.schema import Recipe, TermSpec


def test_the_schema_imports_only_the_base_layer_and_the_source_registry():
    tree = ast.parse(Path(schema.__file__).read_text(encoding="utf8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m.startswith("kdistill")} <= {"kdistill.errors", "kdistill.paths",
                                                                 "kdistill.recipe.sources"}


def test_a_term_is_validated_by_shape_only():
    term = TermSpec(loss="no_such_loss", weight=0.5, args={"temperature": 4})
    assert (term.loss, term.weight, term.args) == ("no_such_loss", 0.5, {"temperature": 4})


def test_defaults_and_stage_consistency_are_the_schemas():
    recipe = Recipe.model_validate({"stages": [{"name": "a"}], "student": {"model": "mlp"}})
    assert recipe.task == "classify" and recipe.stages[0].loss[0].loss == "ce"
