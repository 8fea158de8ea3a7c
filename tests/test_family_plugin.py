"""A model family added from outside the package (docs/architecture.md, "A model family"): a
``Family`` subclass in this file and its registry lines, ``FAMILIES[name] = family`` and the data
sources it reads (``serve(name, "digits")``); the recipe's ``task`` names it, and ``kdistill.run``
calls its hooks and writes its final metrics."""

import json

from kdistill import run
from kdistill.models.infer import predict
from kdistill.families import FAMILIES, Family
from kdistill.recipe import sources

RECIPE = {"name": "toy", "task": "toy", "latency": False, "data": {"source": "digits", "labelled": 100},
          "teacher": {"model": "mlp", "args": {"hidden": [16]}},
          "student": {"model": "mlp", "args": {"hidden": [8]}},
          "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}


class Toy(Family):
    """Judges a model by the share of test inputs whose largest output is class 0, and writes a
    note beside the run."""

    def __init__(self):
        self.called = []

    def check_data(self, splits):
        self.called.append("check_data")

    def model_args(self, splits):
        self.called.append("model_args")
        return {"num_classes": 10}

    def check_terms(self, objective, s_feats, t_feats):
        self.called.append("check_terms")
        super().check_terms(objective, s_feats, t_feats)

    def check_cache(self, recipe, objectives):
        self.called.append("check_cache")
        assert list(objectives) == ["distil"]

    def final_metrics(self, recipe, models, splits, device, outputs=None):
        self.called.append("final_metrics")
        return {"test": {role: {"zeros": (predict(models[role], splits.test_set.x, device).argmax(1) == 0)
                                .float().mean().item()} for role in self.judged(recipe, models)}}

    def export(self, student, folder):
        self.called.append("export")
        (folder / "toy.txt").write_text("a toy family's own file", encoding="utf8")


def test_a_family_defined_outside_the_package_runs_a_recipe(tmp_path, monkeypatch):
    toy = Toy()
    monkeypatch.setitem(FAMILIES, "toy", toy)  # the registry lines: FAMILIES["toy"] = Toy() ...
    monkeypatch.setitem(sources.SOURCES, "digits", sources.SOURCES["digits"])  # (restored after the test)
    sources.serve("toy", "digits")  # ... and serve("toy", "digits")
    assert sources.SOURCES["digits"].tasks == ("classify", "embed", "toy")
    result = run(RECIPE, runs_dir=tmp_path, progress=False)
    assert toy.called == ["check_data", "model_args", "check_terms", "check_cache", "final_metrics", "export"]
    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf8"))
    test = summary["test"]
    assert set(test) == {"teacher", "student"}
    assert all(0.0 <= test[role]["zeros"] <= 1.0 for role in test)
    assert (result.run_dir / "toy.txt").read_text(encoding="utf8") == "a toy family's own file"
