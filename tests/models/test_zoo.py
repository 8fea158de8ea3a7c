import sys
import types

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.weights import load_weights, save_weights
from kdistill.models.zoo import build_model, count_params


@pytest.mark.parametrize("name, args", [
    ("mlp", {"hidden": [32]}),
    ("cnn", {"channels": [8, 16]}),
    ("resnet", {"widths": [8, 16], "blocks_per_stage": 1}),
])
def test_builders_give_logits(name, args):
    model = build_model(name, **args)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_width_and_depth_change_size():
    small = count_params(build_model("resnet", widths=[8, 16], blocks_per_stage=1))
    deep = count_params(build_model("resnet", widths=[8, 16], blocks_per_stage=2))
    wide = count_params(build_model("resnet", widths=[16, 32], blocks_per_stage=1))
    assert small < deep and small < wide


def test_user_model_by_import_path(monkeypatch):
    module = types.ModuleType("user_models")
    module.tiny = lambda width=4: nn.Sequential(nn.Flatten(), nn.Linear(64, width))
    monkeypatch.setitem(sys.modules, "user_models", module)
    model = build_model("user_models:tiny", width=5)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_unknown_names_fail_clearly():
    with pytest.raises(KDistillError, match="cnn"):
        build_model("cnnn")
    with pytest.raises(KDistillError, match="cannot import"):
        build_model("no_such_package.models:net")


def test_weights_round_trip_as_safetensors(tmp_path):
    a, b = build_model("cnn", channels=[4, 8]), build_model("cnn", channels=[4, 8])
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_weights_that_do_not_fit_or_are_pickles_are_refused(tmp_path):
    save_weights(build_model("cnn", channels=[4, 8]), tmp_path / "w.safetensors")
    with pytest.raises(KDistillError, match="does not fit"):
        load_weights(build_model("cnn", channels=[4, 16]), tmp_path / "w.safetensors", "student")
    torch.save({}, tmp_path / "w.pt")
    with pytest.raises(KDistillError, match="safetensors"):
        load_weights(build_model("cnn"), tmp_path / "w.pt")


def test_data_defaults_fill_only_what_the_builder_takes_and_the_recipe_leaves_out():
    from kdistill.models.zoo import with_data_defaults

    known = {"num_classes": 3, "in_channels": 3, "in_features": 12}
    assert with_data_defaults("cnn", {"width": 8}, **known) == {"width": 8, "num_classes": 3, "in_channels": 3}
    assert with_data_defaults("cnn", {"num_classes": 5}, **known)["num_classes"] == 5  # the recipe wins
    assert with_data_defaults("mlp", {}, **known) == {"num_classes": 3, "in_features": 12}
    assert with_data_defaults("pkg.mod:make", {"a": 1}, **known) == {"a": 1}  # a user's builder: its own defaults


def test_a_cnn_student_takes_a_non_square_input_size_from_the_data(tmp_path):
    """A zoo CNN whose args give no image_size takes the data's [height, width] (28x52 here)."""
    import kdistill

    assert build_model("cnn", channels=[4, 8], image_size=[28, 52])(torch.randn(2, 1, 28, 52)).shape == (2, 10)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 52, generator=gen), torch.arange(64) % 4
    recipe = {"name": "wide", "device": "cpu", "latency": False,
              "data": {"source": "custom", "labelled": 16},
              "teacher": {"model": "mlp", "args": {"hidden": [16]}},
              "student": {"model": "cnn", "args": {"channels": [4, 8]}},
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1},
                         {"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}
    result = kdistill.run(recipe, data=((x[:48], y[:48]), (x[48:], y[48:])), runs_dir=tmp_path, progress=False)
    assert result.models["student"].head[-1].in_features == 8 * 14 * 26  # one 2x2 pool: 28x52 -> 14x26
