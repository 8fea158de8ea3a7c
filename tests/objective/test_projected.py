"""kdistill.objective.projected: the teacher feature ``projected``, the teacher's output mapped by a
static student's own fixed PCA into its space, read by a loss with no adapter and nothing trained."""

import pytest
import torch
import torch.nn.functional as F
from fixtures import save_static_teacher

pytest.importorskip("transformers")

from kdistill.models.hf import hf_encoder  # noqa: E402
from kdistill.models.static import static_encoder  # noqa: E402
from kdistill.models.zoo import build_model  # noqa: E402
from kdistill.objective.build import build_stage_objectives  # noqa: E402
from kdistill.objective.projected import PROJECTED, ProjectedTeacher  # noqa: E402
from kdistill.recipe import load_recipe  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    teacher = hf_encoder(path=str(save_static_teacher(tmp_path_factory.mktemp("static_teacher"))))
    return {"teacher": teacher.eval(), "student": static_encoder(teacher, width=8)}


def test_the_projected_teacher_is_the_students_pca_of_its_output(models):
    provider = ProjectedTeacher.from_recipe(None, models, None, CPU, None, 0)
    tap, projection = provider.teacher_features()[PROJECTED]
    assert tap == "logits" and projection is models["student"].teacher_projection
    texts = ["the dog runs", "a red car on the road"]
    teacher_emb = models["teacher"].encode(texts)  # (2, 32), unit length
    by_hand = F.normalize((teacher_emb - projection.mean) @ projection.components, dim=-1)
    assert torch.allclose(projection(teacher_emb), by_hand) and by_hand.shape == (2, 8)
    assert not list(provider.parameters()) and not provider.state_dict()  # fixed, rebuilt, never saved


def test_no_provider_for_other_students(models):
    assert ProjectedTeacher.from_recipe(None, {**models, "student": build_model("mlp")}, None, CPU, None, 0) is None


def test_a_term_reading_it_needs_no_adapter(models):
    recipe = load_recipe({"data": {"source": "csv", "path": "unused.csv"}, "teacher": {"model": "hf"},
                          "student": {"model": "static"},
                          "stages": [{"name": "distil", "data": "transfer",
                                      "loss": [{"loss": "embed_cosine", "teacher": PROJECTED}]}]})
    provider = ProjectedTeacher.from_recipe(recipe, models, None, CPU, None, 0)
    sample = models["student"].tokenize(["the dog runs", "big moon"])
    objective = build_stage_objectives(recipe, models, sample, [provider])["distil"]
    assert objective.teacher_derived == {PROJECTED: ("logits", models["student"].teacher_projection)}
    assert all(isinstance(a, torch.nn.Identity) for a in objective.adapters.values())
    student_out = models["student"](sample)
    total, _ = objective({"logits": student_out}, {PROJECTED: student_out.detach()}, None)
    assert total.item() == pytest.approx(0.0, abs=1e-6)  # the student equal to the projected teacher
