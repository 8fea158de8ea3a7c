"""Shallow and deep distillation and the composite objective, end to end on digits."""

import json

import pytest

from kdistill import run
from fixtures import stage_records

TEACHER = {"model": "cnn", "args": {"channels": [16, 32], "hidden": 64, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8], "image_size": 8}}
TRAIN_TEACHER = {"name": "teacher", "train": "teacher", "data": "full", "epochs": 4, "batch_size": 64}


def _recipe(name, stages, **extra):
    return {"name": name, "data": {"source": "digits", "labelled": 200}, "teacher": TEACHER,
            "student": STUDENT, "stages": [TRAIN_TEACHER, *stages], "latency": False, **extra}


def test_shallow_pipeline_embeds_and_classifies_by_distance(tmp_path):
    recipe = _recipe("shallow", [
        {"name": "distil", "data": "transfer", "epochs": 4, "batch_size": 64,
         "loss": [{"loss": "embed_mse", "student": "stages.1", "teacher": "embedding"},
                  {"loss": "distance_kl", "weight": 0.1, "student": "stages.1", "teacher": "embedding"}]},
        {"name": "prototypes", "data": "labelled+transfer", "epochs": 2, "batch_size": 64,
         "optimizer": {"lr": 0.01},
         "loss": [{"loss": "prototype_kl", "student": "prototypes", "args": {"lam": 0.1}},
                  {"loss": "ce", "student": "prototypes"}]},
    ], embedding={"teacher": "head.2", "student": "stages.1", "dim": 8, "shots": [1, 5, 10]})
    result = run(recipe, runs_dir=tmp_path, progress=False)
    emb = json.loads((result.run_dir / "summary.json").read_text())["embedding"]
    shots = {"prototype@1", "knn@1", "prototype@5", "knn@5", "prototype@10", "knn@10"}
    shots |= {k.replace("@", "_balanced@") for k in shots} | {"majority_rate"}  # balanced accuracy beside each
    assert set(emb["teacher"]) == shots and set(emb["student"]) == shots | {"prototype_head"}
    assert emb["student"]["prototype_head"] > 0.5
    # ten well-separated digit classes: even one label a class is far above chance (0.1)
    assert emb["teacher"]["prototype@10"] > 0.8
    assert emb["student"]["prototype@10"] > 0.5
    assert (result.run_dir / "embedding_head.safetensors").is_file()
    records = stage_records(result.run_dir)
    assert {"embed_mse", "distance_kl"} <= set(records["distil"][-1]["train"])
    assert {"prototype_kl", "ce"} <= set(records["prototypes"][-1]["train"])


def test_deep_pipeline_and_composite_objective(tmp_path):
    recipe = _recipe("deep", [
        {"name": "distil", "data": "transfer", "epochs": 3, "batch_size": 64,
         "loss": [{"loss": "vid", "student": "stages.1", "teacher": "stages.1"},
                  {"loss": "at", "weight": 10, "student": "stages.0", "teacher": "stages.0"},
                  {"loss": "kd", "weight": 1.0, "args": {"temperature": 4, "alpha": 1.0}},
                  {"loss": "residual_smooth", "weight": 0.1, "student": "stages.1", "teacher": "stages.1"},
                  {"loss": "entropy", "weight": -0.01}]},
        {"name": "finetune", "data": "labelled", "epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.01},
         "loss": [{"loss": "ovr"}, {"loss": "scatter", "weight": 0.01, "student": "stages.1"},
                  {"loss": "l2_start", "weight": 0.01, "args": {"start": "distil"}},
                  {"loss": "kd", "args": {"alpha": 0.5}, "weight": 0.0}]},  # weight 0: switched off
    ])
    result = run(recipe, runs_dir=tmp_path, progress=False)
    records = stage_records(result.run_dir)
    distil, finetune = records["distil"][-1]["train"], records["finetune"][-1]["train"]
    assert {"vid", "at", "kd", "residual_smooth", "entropy"} <= set(distil)
    assert {"ovr", "scatter", "l2_start"} <= set(finetune) and "kd" not in finetune
    assert finetune["l2_start"] > 0  # the weights moved away from where distillation left them
    summary = result.summary["test"]
    assert summary["student"]["accuracy"] > 0.5


def test_embedding_terms_need_an_embedding_section(tmp_path):
    from kdistill.errors import KDistillError

    recipe = _recipe("bad", [{"name": "d", "data": "transfer",
                              "loss": [{"loss": "embed_mse", "student": "stages.1", "teacher": "embedding"}]}])
    with pytest.raises(KDistillError, match="no 'embedding' section"):
        run(recipe, runs_dir=tmp_path, progress=False)


def test_shallow_pipeline_with_every_training_image_labelled(tmp_path):
    recipe = _recipe("all-labelled", [
        {"name": "distil", "data": "labelled+transfer", "epochs": 1, "batch_size": 128,
         "loss": [{"loss": "embed_mse", "student": "stages.1", "teacher": "embedding"}]},
    ], embedding={"teacher": "head.2", "student": "stages.1", "dim": 4, "shots": [1]})
    recipe["data"]["labelled"] = 1.0  # no transfer set: the space is fitted on the labelled inputs
    result = run(recipe, runs_dir=tmp_path, progress=False)
    assert result.summary["data"]["transfer"] == 0
    assert 0 <= result.summary["embedding"]["student"]["prototype@1"] <= 1
