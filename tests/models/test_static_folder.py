"""export_static (kdistill/models/static_folder.py): a static-embedding student as one folder that model2vec
and sentence-transformers load, giving the student's own embeddings; and the generic ONNX export."""

import json

import pytest
import torch
from fixtures import save_static_teacher

pytest.importorskip("transformers")

from kdistill.errors import KDistillError  # noqa: E402
from kdistill.export.onnx import export_onnx  # noqa: E402
from kdistill.models.static_folder import export_static  # noqa: E402
from kdistill.models.hf import hf_encoder  # noqa: E402
from kdistill.models.static import static_encoder  # noqa: E402

pytestmark = pytest.mark.usefixtures("offline_hub")

TEXTS = ["the dog runs over the road", "Big red cars", "a zebra and a dog",  # zebra, and: [UNK]
         "", " ".join(["sun"] * 150 + ["moon"] * 50)]  # no token; 200 tokens, past any max_length of a run


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    teacher = hf_encoder(path=str(save_static_teacher(tmp_path_factory.mktemp("static_teacher"))))
    model = static_encoder(teacher, width=8)
    with torch.no_grad():  # trained rows: not the rows it was built with
        model.embedding.weight.add_(0.01 * torch.randn_like(model.embedding.weight) * model.counted[:, None])
    return model


def test_model2vec_and_sentence_transformers_give_the_students_embeddings(student, tmp_path):
    model2vec = pytest.importorskip("model2vec")
    st = pytest.importorskip("sentence_transformers")
    expected = student.encode(TEXTS)
    assert not torch.allclose(expected[-1], student.encode([" ".join(["sun"] * 30)])[0], atol=1e-3)  # length matters
    out = export_static(student, tmp_path / "static")
    config = json.loads((out / "config.json").read_text())
    assert config["normalize"] is True and config["max_length"] is None and config["hidden_dim"] == 8
    loaded = model2vec.StaticModel.from_pretrained(out)
    assert torch.allclose(torch.from_numpy(loaded.encode(TEXTS)), expected, atol=1e-5)
    sentence = st.SentenceTransformer(str(out), device="cpu")
    assert torch.allclose(torch.as_tensor(sentence.encode(TEXTS)), expected, atol=1e-5)
    assert not (tmp_path / "static.incomplete").exists()


def test_without_normalisation_model2vec_still_agrees(student, tmp_path):
    model2vec = pytest.importorskip("model2vec")
    student.normalize = False
    try:
        expected = student.encode(TEXTS)
        loaded = model2vec.StaticModel.from_pretrained(export_static(student, tmp_path / "raw"))
    finally:
        student.normalize = True
    assert json.loads((tmp_path / "raw" / "modules.json").read_text())[-1]["path"] == "."  # no Normalize module
    assert torch.allclose(torch.from_numpy(loaded.encode(TEXTS)), expected, atol=1e-5)


def test_onnx_takes_any_length(student, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    sample = student.tokenize(TEXTS[:3])
    result = export_onnx(student, sample, tmp_path / "static.onnx")
    assert result["max_abs_diff"] < 1e-5
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    longer = student.tokenize(TEXTS)  # another batch size and length than the sample's
    inputs = [i.name for i in session.get_inputs()]
    feed = ({inputs[0]: longer.numpy()} if len(inputs) == 1 else  # packed, or ids and mask apart
            {inputs[0]: longer[:, 0].numpy(), inputs[1]: longer[:, 1].numpy()})
    assert torch.allclose(torch.from_numpy(session.run(None, feed)[0]), student(longer), atol=1e-5)


def test_refuses_other_models_and_a_full_folder(student, tmp_path):
    with pytest.raises(KDistillError, match="not a static-embedding student"):
        export_static(torch.nn.Linear(2, 2), tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(KDistillError, match="exists and is not empty"):
        export_static(student, tmp_path / "full")
