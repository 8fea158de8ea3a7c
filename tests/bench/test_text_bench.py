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
    lines = bench.transformer_table({"rows": rows, "exports": exports, "seconds": 60.0, "epochs": 2, "transfer": 20000})
    line = next(x for x in lines if x.startswith("| 2 layers"))
    assert "3.00x" in line and "0.930" in line and line.endswith("| 0.960 |")


def test_static_recipes_share_one_teacher_cache_and_keep_the_transfer_set(tmp_path):
    trees = [bench.static_recipe(w, quick=False, tiny=None, transfer=None, threads=1, cache=tmp_path) for w in (64, 384)]
    recipes = [load_recipe(t) for t in trees]
    assert [r.student.args["width"] for r in recipes] == [64, 384]
    assert {r.stages[0].cache.dir for r in recipes} == {str(tmp_path)}
    assert recipes[0].data.transfer == load_recipe(bench.RECIPE).data.transfer  # the transformer rows' glosses


def test_static_table_reports_speed_and_share_of_the_teachers_accuracy():
    row = {"params": 2e6, "weight_bytes": 8e6, "sentences_per_s": 100.0, "speedup": 1.0, "logreg@10": 0.5}
    part = {"rows": {"teacher": row, "static 64, distilled": {**row, "speedup": 150.0, "logreg@10": 0.46,
                                                              "neighbour_overlap@10": 0.5}},
            "model2vec": {64: {"train_s": 120.0}}, "same_draws": False, "load_average": 0.2, "epochs": 10,
            "transfer": 20000, "export_width": 64, "model2vec_max_abs_diff": 1e-7}
    lines = bench.static_table(part)
    line = next(x for x in lines if x.startswith("| static 64"))
    assert "150.0x" in line and "| 50.0 |" in line and line.endswith("| 0.920 |")
    assert "WARNING" in lines[-1] and "load average 0.20" in lines[-1]


def test_text_encoder_reads_the_teachers_tokens_back_as_text():
    class Echo:  # a model2vec-like model: the length of each text it is given
        embedding = [[0.0, 0.0]]

        def encode(self, texts, batch_size=32):
            return [[float(len(t)), 0.0] for t in texts]

    class Decoder:
        def batch_decode(self, ids, skip_special_tokens=True):
            return ["x" * len(row) for row in ids]

    import torch

    x = torch.tensor([[[5, 6, 0], [1, 1, 0]], [[7, 0, 0], [1, 0, 0]]])  # (B, 2, L): ids and mask
    out = bench.TextEncoder(Echo(), Decoder())(x)
    assert out[:, 0].tolist() == [2.0, 1.0]  # the padding is not read
