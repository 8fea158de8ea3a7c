"""hf_vision (kdistill/models/hf_vision.py): transformers image classifiers of two families as
teachers, loaded from folders, cut into students, distilled from a recipe."""

import pytest
import torch

from kdistill.errors import KDistillError
from kdistill.models.zoo import build_model

transformers = pytest.importorskip("transformers")

VIT = {"model_type": "vit", "image_size": 8, "patch_size": 4, "num_channels": 1, "hidden_size": 16,
       "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10}
RESNET = {"model_type": "resnet", "num_channels": 1, "embedding_size": 8, "hidden_sizes": [8, 16],
          "depths": [1, 2], "num_labels": 10}
pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.mark.parametrize("config, layers", [(VIT, 3), (RESNET, None)])
def test_two_families_give_logits_and_say_whether_layers_can_be_kept(config, layers):
    from kdistill.models.taps import resolve_module

    torch.manual_seed(0)
    model = build_model("hf_vision", config=config)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    stack = getattr(model, "layer_stack", None)
    assert (stack is None) == (layers is None)
    if layers:  # ViT's encoder layers (vit.encoder.layer; vit.layers in transformers 5)
        assert stack.startswith("model.vit.") and len(resolve_module(model, stack)) == layers


@pytest.mark.parametrize("config", [VIT, RESNET])
def test_a_saved_folder_loads_with_the_same_outputs(config, tmp_path):
    torch.manual_seed(0)
    model = build_model("hf_vision", config=config).eval()
    model.model.save_pretrained(tmp_path)
    loaded = build_model("hf_vision", path=str(tmp_path)).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_bad_arguments_fail_in_one_line(tmp_path):
    with pytest.raises(KDistillError, match="exactly one of args.path"):
        build_model("hf_vision")
    with pytest.raises(KDistillError, match="does not exist"):
        build_model("hf_vision", path=str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text('{"model_type": "vit"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(KDistillError, match="model 'hf_vision': .* never loads"):
        build_model("hf_vision", path=str(tmp_path))


def test_a_vit_teacher_distils_into_a_cnn_and_into_a_cut_of_itself(tmp_path):
    from kdistill import run

    distil = {"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 64,
              "optimizer": {"name": "adamw", "lr": 3e-3}, "loss": [{"loss": "kd"}]}
    base = {"seed": 0, "latency": False, "device": "cpu", "data": {"source": "digits", "labelled": 200, "transfer": 400},
            "teacher": {"model": "hf_vision", "args": {"config": VIT}}}
    cnn = run({**base, "name": "vit-cnn", "student": {"model": "cnn", "args": {"channels": [8, 16], "image_size": 8}},
               "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 3, "batch_size": 64,
                           "optimizer": {"name": "adamw", "lr": 3e-3}}, distil]}, runs_dir=tmp_path, progress=False)
    # the trained teacher loaded from its weights, cut to its first layer
    teacher = {**base["teacher"], "weights": str(cnn.run_dir / "teacher.safetensors")}
    cut = run({**base, "name": "vit-cut", "teacher": teacher, "student": {"from_teacher": {"layers": 1}},
               "stages": [distil]}, runs_dir=tmp_path, progress=False)
    for result in (cnn, cut):
        test = result.summary["test"]
        assert test["teacher"]["accuracy"] > 0.3 and test["student"]["agreement"] > 0.3
    student = cut.models["student"]
    from kdistill.models.taps import resolve_module

    assert len(resolve_module(student, student.layer_stack)) == 1 and student.model.config.num_hidden_layers == 1
    assert cut.summary["test"]["student"]["params"] < cut.summary["test"]["teacher"]["params"]
