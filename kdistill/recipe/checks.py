"""The recipe's checks that need registries, run once the schema has validated it: every loss
term names a registered loss and is built once (so a bad argument fails before any data loads),
the task is a model family that the data source serves, and each stage's terms get what their
contracts ask for (a teacher, an earlier stage to start from)."""

from __future__ import annotations

from kdistill.errors import KDistillError, shown
from kdistill.families import FAMILIES
from kdistill.losses.registry import build_loss, check_loss_name, contract_of
from kdistill.recipe.load import located_error
from kdistill.recipe.schema import Recipe
from kdistill.recipe.sources import SOURCES, serving


def check_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` once every registry-backed check passed; the first problem as a one-line
    ``KDistillError``, worded as the schema's are."""
    for i, stage in enumerate(recipe.stages):
        for j, term in enumerate(stage.loss):
            check_loss_name(term.loss)
            try:
                build_loss(term.loss, **term.args)
            except KDistillError as err:
                raise located_error(("stages", i, "loss", j), str(err)) from None
    _check_task(recipe)
    for i in range(len(recipe.stages)):
        _check_contracts(recipe, i)
    return recipe


def _check_task(recipe: Recipe) -> None:
    """``task`` names a model family, one the data source declares it serves."""
    task, source = recipe.task, recipe.data.source
    if task not in FAMILIES:
        raise located_error(("task",), f"not a model family; use one of {', '.join(FAMILIES)}", task)
    served = SOURCES[source].tasks
    if task in served:
        return
    rules = [(name, FAMILIES[name].data_rule) for name in (task, *served) if name in FAMILIES]
    name, rule = next(((name, rule) for name, rule in rules if rule), (task, None))
    why = (rule.format(sources=", ".join(serving(name))) if rule else
           f"it serves {', '.join(served)}; set task to one of them, or use a source that serves {task}")
    raise located_error((), f"task {shown(task)} does not fit data.source {shown(source)}: {why}")


def _check_contracts(recipe: Recipe, i: int) -> None:
    """A stage's terms get what their contracts read: a teacher, and the starting weights of
    ``init``, the stage's own start or an earlier stage's end."""
    stage, names = recipe.stages[i], [s.name for s in recipe.stages]
    needs_teacher = stage.train != "teacher" and any(contract_of(t.loss).teacher for t in stage.loss)
    if needs_teacher and recipe.teacher is None:
        raise located_error((), f"stages.{i} ({stage.name}) uses a teacher loss but no teacher is set")
    for t in stage.loss:
        start = t.args.get("start", "stage") if contract_of(t.loss).start else "stage"
        if start not in ("init", "stage", *names[:i]):
            raise located_error((), f"stages.{i}.loss: {t.loss} start {shown(start)} must be init, stage or an "
                                    f"earlier stage ({shown(names[:i], 200)})")
