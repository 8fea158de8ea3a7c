"""kdistill: distil a big teacher into a small student from a YAML recipe or from Python."""

from kdistill.data import ArraySource
from kdistill.errors import KDistillError
from kdistill.recipe import Recipe, load_recipe
from kdistill.rebuild import evaluate_run
from kdistill.runner import RunResult, run

__all__ = ["ArraySource", "KDistillError", "Recipe", "RunResult", "evaluate_run", "load_recipe", "run"]
__version__ = "0.1.0"
