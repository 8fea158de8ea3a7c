"""End to end on text: a static-embedding student built from a tiny teacher, distilled against the
teacher's embeddings projected into its space, judged, written as a model2vec folder, reloaded,
and exported again from the finished run."""

import json

import pytest
import torch
from fixtures import save_static_teacher, stage_records

pytest.importorskip("transformers")

from kdistill import run  # noqa: E402
from kdistill.errors import KDistillError  # noqa: E402
from kdistill.closeness import mean_cosine  # noqa: E402
from kdistill.models.static import static_encoder  # noqa: E402
from kdistill.rebuild import export_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_static_teacher(tmp_path_factory.mktemp("static_teacher"))


def recipe(teacher_dir, sentences, **extra):
    return {"name": "static", "latency": False, "seed": 0,
            "data": {"source": "csv", "path": str(sentences), "labelled": 30, "val": 30,
                     "text": {"test": 60, "max_length": 8}},
            "teacher": {"model": "hf", "args": {"path": str(teacher_dir)}},
            "student": {"model": "static", "args": {"width": 8}},
            "stages": [{"name": "distil", "data": "transfer", "epochs": 4, "batch_size": 16,
                        "optimizer": {"name": "adam", "lr": 2e-3, "weight_decay": 0},
                        "schedule": {"name": "constant"},
                        "loss": [{"loss": "embed_cosine", "teacher": "projected"}]}],
            **extra}


def test_static_student_distils_evaluates_exports_and_reloads(teacher_dir, sentences, tmp_path):
    result = run(recipe(teacher_dir, sentences), runs_dir=tmp_path, progress=False)
    teacher, student = result.models["teacher"], result.models["student"]
    texts = [line.split(",")[0] for line in sentences.read_text().splitlines()[1:]]
    target = student.teacher_projection(teacher.encode(texts))  # the teacher in the student's space
    built = static_encoder(teacher, width=8)  # the student as built, before distillation
    assert mean_cosine(student.encode(texts), target) > mean_cosine(built.encode(texts), target) + 0.2
    losses = [r["train"]["embed_cosine"] for r in stage_records(result.run_dir)["distil"]]
    assert losses[-1] < losses[0]
    assert "neighbour_overlap@10" in stage_records(result.run_dir)["distil"][-1]["val"]  # 8 wide, teacher 32

    summary = result.summary
    tested = summary["test"]["student"]
    for key in ("prototype@1", "logreg@10", "neighbour_overlap@10", "sentences_per_s"):
        assert key in tested
    assert "mean_cosine" not in tested  # the widths differ: the cosine is the projected one
    assert summary["projected"]["student"]["mean_cosine"] > 0.5
    assert tested["params"] == 8 * len(teacher.tokenizer) < summary["test"]["teacher"]["params"]
    assert list(summary["test"]) == ["teacher", "cut", "student"]  # the student as built is judged too
    assert summary["projected"]["student"]["mean_cosine"] > summary["projected"]["cut"]["mean_cosine"]

    model2vec = pytest.importorskip("model2vec")
    probe = ["the dog runs over the road", "sun " * 40 + "moon"]  # the second: past the run's 8 tokens
    loaded = model2vec.StaticModel.from_pretrained(result.run_dir / "student_static")
    assert torch.allclose(torch.from_numpy(loaded.encode(probe)), student.encode(probe), atol=1e-5)

    onnx = pytest.importorskip("onnxruntime")
    meta = export_run(result.run_dir, "onnx")  # rebuilt from the run directory: built from the teacher again
    assert meta["max_abs_diff"] < 1e-5
    session = onnx.InferenceSession(meta["path"], providers=["CPUExecutionProvider"])
    packed = student.tokenize(probe)
    feed = dict(zip([i.name for i in session.get_inputs()], packed.unbind(1))) if len(session.get_inputs()) == 2 \
        else {session.get_inputs()[0].name: packed}
    out = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
    assert torch.allclose(torch.from_numpy(out), student.cpu()(packed), atol=1e-5)
    assert json.loads((result.run_dir / "student_static" / "config.json").read_text())["hidden_dim"] == 8


def test_at_the_teachers_width_the_teachers_own_output_is_the_target(teacher_dir, sentences, tmp_path):
    tree = recipe(teacher_dir, sentences, student={"model": "static"})  # 32 wide, as the teacher: no PCA
    tree["stages"][0].update(epochs=1, loss=[{"loss": "embed_cosine"}])  # the teacher's own output
    result = run(tree, runs_dir=tmp_path, progress=False)
    cosine = result.summary["test"]["student"]["mean_cosine"]  # one space: cosine to the teacher itself
    assert cosine == pytest.approx(result.summary["projected"]["student"]["mean_cosine"], abs=1e-5)
    narrow = recipe(teacher_dir, sentences, name="narrow")
    narrow["stages"][0]["loss"] = [{"loss": "embed_cosine"}]
    with pytest.raises(KDistillError, match="teacher: projected"):  # 8 wide against 32: refused, in one line
        run(narrow, runs_dir=tmp_path, progress=False)
