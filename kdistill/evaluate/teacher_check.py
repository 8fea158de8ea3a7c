"""Whether a loaded teacher still knows the data: a teacher this run does not train, read from
weights, that scores near chance on the run's labelled test inputs (or far below the test
accuracy its weights record) is seeing inputs unlike those it was trained on. The run stops
before training, naming the likely causes and ``data.check_teacher: false``, which lets it go on.

Few test inputs give a noisy accuracy, so the rule judges the upper end of a confidence interval
(Wilson's, two standard errors): a teacher is refused only when even that stays below the mark.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from kdistill.errors import KDistillError

ACCURACY_KEY = "test_accuracy"  # safetensors metadata: the teacher's test accuracy when kdistill trained it
Z = 2.0  # standard errors of the Wilson interval's upper end


def wilson_upper(correct: int, n: int, z: float = Z) -> float:
    """The upper end of the Wilson score interval of ``correct`` successes in ``n`` trials."""
    if n == 0:
        return 1.0
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def chance_level(labels: torch.Tensor) -> float:
    """What a teacher that ignores its input scores on ``labels``: the most common class's share."""
    return float(torch.bincount(labels).max()) / len(labels) if len(labels) else 0.0


def near_chance_mark(chance: float) -> float:
    """Below this accuracy a teacher is near chance: 1.5 x chance, but at most a tenth of the way
    from chance to perfect (two balanced classes: 0.55, not 0.75)."""
    return chance + min(0.5 * chance, 0.1 * (1 - chance))


def recorded_accuracy(weights) -> float | None:
    """The test accuracy kdistill recorded with a teacher's ``.safetensors`` weights, or None."""
    from safetensors import SafetensorError, safe_open

    path = Path(weights)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            value = (f.metadata() or {}).get(ACCURACY_KEY)
        return float(value) if value is not None else None
    except (SafetensorError, OSError, ValueError):
        return None


def judge_teacher(correct: int, labels: torch.Tensor, recorded: float | None) -> None:
    """Refuse a loaded teacher that gets ``correct`` of ``labels`` right, if that is near chance
    or far below its ``recorded`` test accuracy (more than half its lift over chance lost)."""
    n = len(labels)
    if n == 0:
        return
    accuracy, upper, chance = correct / n, wilson_upper(correct, n), chance_level(labels)
    low = upper < near_chance_mark(chance)
    fallen = recorded is not None and upper < recorded - 0.5 * (recorded - chance)
    if not (low or fallen):
        return
    what = (f"near chance ({chance:.3f}, the most common class's share)" if low else
            f"far below the {recorded:.3f} its weights record")
    if low and recorded is not None:
        what += f"; its weights record {recorded:.3f}"
    raise KDistillError(f"teacher: scores {accuracy:.3f} on {n} labelled test inputs, {what}; its inputs likely "
                        "differ from those it was trained on: input scaling (uint8 vs float, data.normalize), class "
                        "order, channels (data.images.mode) or image size (data.images.size); fix the data, or set "
                        "data.check_teacher: false to go on anyway.")
