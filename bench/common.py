"""What the benchmarks share: a resumable log of finished cells and mean ± sd formatting."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


class CellLog:
    """Finished cells, one JSON object a line; a rerun skips the cells already there."""

    def __init__(self, path: Path, key: tuple[str, ...]):
        self.path, self.key = path, key
        self.records = [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()] if path.exists() else []

    def done(self, **cell) -> bool:
        return any(all(r.get(k) == cell[k] for k in self.key) for r in self.records)

    def add(self, record: dict) -> None:
        with self.path.open("a", encoding="utf8") as f:
            f.write(json.dumps(record) + "\n")
        self.records.append(record)

    def values(self, field: str, **cell) -> list[float]:
        return [r[field] for r in self.records if all(r.get(k) == v for k, v in cell.items())]

    def hours(self) -> float:
        return sum(r["seconds"] for r in self.records) / 3600


def mean_sd(values: list[float], scale: float = 100.0) -> str:
    """``mean ± sd (n=k)`` of ``values`` times ``scale``; ``-`` when there are none."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} ± {scale * sd:.2f} (n={len(values)})"


def write_lines(lines: list[str], out: Path) -> str:
    """Write a table's lines to ``out`` and return the text (for printing)."""
    text = "\n".join(lines) + "\n"
    out.write_text(text, encoding="utf8")
    return text


def decay_everything(tree: dict) -> dict:
    """``tree`` (a recipe dict) with weight decay on every parameter, biases and normalisation
    weights too (``optimizer.decay_bias_and_norm``): how the published tables were measured,
    before kdistill's default left those undecayed. Until they are measured again with the
    default, the benches run this way, so that their commands reproduce their tables."""
    for stage in tree.get("stages", []):
        stage["optimizer"] = {**stage.get("optimizer", {}), "decay_bias_and_norm": True}
    return tree


def finished_summary(folder: Path, tree: dict) -> dict | None:
    """The ``summary.json`` of the finished run in ``folder`` when its recipe is ``tree``'s (the
    name aside), else None: a rerun of a bench reads a finished row back, never one of another recipe."""
    from kdistill.recipe import load_recipe

    if not ((folder / "summary.json").exists() and (folder / "recipe.yaml").exists()):
        return None
    stored, wanted = (load_recipe(t).model_dump(exclude={"name"}) for t in (folder / "recipe.yaml", tree))
    return json.loads((folder / "summary.json").read_text(encoding="utf8")) if stored == wanted else None
