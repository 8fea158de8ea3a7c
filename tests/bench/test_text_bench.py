"""The text benchmark's recipes are valid variations of the shipped one."""

import importlib.util
import sys
from pathlib import Path

from kdistill.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
spec = importlib.util.spec_from_file_location("text_bench", Path(__file__).parents[2] / "bench" / "text.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_recipes_keep_first_and_last_layers_of_minilm():
    for layers in (2, 3):
        recipe = load_recipe(bench.recipe_for(layers, quick=False, tiny=None, epochs=None))
        assert recipe.student.from_teacher.layers == layers and recipe.student.from_teacher.pick == "first_last"
        assert recipe.teacher.args["path"] == "all-MiniLM-L6-v2" and recipe.task == "embed"
        assert recipe.data.source == "wordnet" and recipe.data.labelled == 0


def test_table_reports_the_share_of_the_teachers_accuracy(tmp_path):
    row = {"params": 2e6, "weight_bytes": 8e6, "sentences_per_s": 100.0, "speedup": 1.0, "logreg@10": 0.5}
    rows = {"teacher": row, "2 layers, distilled": {**row, "speedup": 3.0, "logreg@10": 0.48, "mean_cosine": 0.93}}
    exports = {"sentence_transformers_max_abs_diff": 0.0, "onnx_max_abs_diff": 1e-7, "folder_bytes": 1, "onnx_bytes": 1}
    text = bench.write_table(rows, exports, tmp_path / "t.md", 60.0, 2, 20000)
    line = next(x for x in text.splitlines() if x.startswith("| 2 layers"))
    assert "3.00x" in line and "0.930" in line and line.endswith("| 0.960 |")
