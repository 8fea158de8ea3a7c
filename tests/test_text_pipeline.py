"""End to end on text: a tiny transformer teacher, a 1-layer student cut from it, distilled on
unlabelled sentences, judged by agreement with the teacher and few-label accuracy."""


import pytest

from kdistill import run
from kdistill.closeness import mean_cosine
from kdistill.models.subnet import sub_network
from kdistill.errors import KDistillError
from kdistill.recipe import load_recipe
from fixtures import stage_records

pytest.importorskip("transformers")


def recipe(tiny_bert, sentences, **extra):
    return {"name": "text", "latency": False,
            "data": {"source": "csv", "path": str(sentences), "labelled": 30, "val": 30,
                     "text": {"test": 60, "max_length": 16}},
            "teacher": {"model": "hf", "args": {"path": str(tiny_bert)}},
            "student": {"from_teacher": {"layers": 1, "pick": "first"}},
            "embedding": None,
            "stages": [{"name": "distil", "data": "transfer", "epochs": 3, "batch_size": 16,
                        "optimizer": {"name": "adamw", "lr": 1e-3},
                        "loss": [{"loss": "embed_mse"}, {"loss": "embed_cosine"}, {"loss": "rkd"}]}],
            **extra}


def test_distilled_sub_network_moves_towards_the_teacher(tiny_bert, sentences, tmp_path):
    after = run(recipe(tiny_bert, sentences), runs_dir=tmp_path, progress=False)
    teacher, student = after.models["teacher"], after.models["student"]
    undistilled = sub_network(teacher, keep=[0])  # the student's start: the teacher's first layer
    texts = [line.split(",")[0] for line in sentences.read_text().splitlines()[1:]]
    target = teacher.encode(texts)
    assert mean_cosine(student.encode(texts), target) > mean_cosine(undistilled.encode(texts), target)
    s1 = after.summary["test"]["student"]
    assert load_recipe(after.run_dir / "recipe.yaml").task == "embed"
    assert s1["params"] < after.summary["test"]["teacher"]["params"]
    for key in ("prototype@1", "logreg@10", "neighbour_overlap@10", "sentences_per_s", "speedup", "weight_bytes"):
        assert key in s1
    assert after.summary["data"]["test"] == 60
    assert "mean_cosine" in stage_records(after.run_dir)["distil"][-1]["val"]
    assert "cosine to teacher" in (after.run_dir / "report.md").read_text()


def test_text_needs_a_tokenizer_and_a_teacher_to_cut_from(sentences, tmp_path):
    tree = {"name": "t", "data": {"source": "csv", "path": str(sentences)},
            "student": {"model": "mlp"}, "stages": [{"name": "s", "loss": [{"loss": "ce"}]}]}
    with pytest.raises(KDistillError, match="tokenizer"):
        run(tree, runs_dir=tmp_path, progress=False)
    with pytest.raises(KDistillError, match="from_teacher: needs a teacher"):
        load_recipe({**tree, "student": {"from_teacher": {"layers": 1}}})
    with pytest.raises(KDistillError, match="exactly one of keep"):
        load_recipe({**tree, "student": {"from_teacher": {"layers": 1, "keep": [0]}}})
