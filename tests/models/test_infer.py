"""kdistill.models.infer: eval mode with every module's own mode restored, batched forward
passes that equal one big pass, and the one-line error of a dry pass on inputs the model refuses."""

import io
import sys

import pytest
import torch
from fixtures import as_terminal
from torch import nn

from kdistill import progress
from kdistill.errors import KDistillError
from kdistill.models.infer import dry_features, eval_mode, forward_batches
from kdistill.models.taps import FeatureTaps
from kdistill.models.zoo import build_model

CPU = torch.device("cpu")


def _mixed():
    """A model whose submodules are in different modes: ``a`` in eval, ``b`` in train."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model[0].eval()
    assert model.training and not model[0].training and model[1].training
    return model


def _modes(model):
    return {name: m.training for name, m in model.named_modules()}


def test_eval_mode_sets_eval_inside_and_restores_each_modules_own_mode():
    model = _mixed()
    before = _modes(model)
    with eval_mode(model):
        assert not any(_modes(model).values())
    assert _modes(model) == before


def test_eval_mode_restores_modes_when_the_block_raises():
    model, other = _mixed(), nn.Linear(2, 2)  # several models at once
    before, other_before = _modes(model), _modes(other)
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model, other):
            assert not model[1].training and not other.training
            raise RuntimeError("boom")
    assert _modes(model) == before and _modes(other) == other_before


def _cnn():
    model = build_model("cnn", channels=[4, 8], image_size=8, dropout=0.5)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval and train differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _reference(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 5, 10, 512])  # 3 does not divide 10; 512 is more than N
def test_forward_batches_equals_one_big_forward(batch_size):
    model, x = _cnn(), torch.randn(10, 1, 8, 8)
    expected = _reference(model, x)
    out = forward_batches(model, x, CPU, batch_size=batch_size)
    assert out.shape == (10, 10)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert model.training  # back in train mode afterwards


@pytest.mark.parametrize("batch_size", [4, 10])
def test_forward_batches_with_taps_gives_every_tap_joined(batch_size):
    model, x = _cnn(), torch.randn(10, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        stage0 = model.stages[0](x)
        logits = model.head(model.stages[1](stage0))
    model.train()
    out = forward_batches(model, x, CPU, ["stages.0", "logits"], batch_size=batch_size)
    assert set(out) == {"stages.0", "logits"}
    assert out["stages.0"].shape == (10, 4, 4, 4)  # pooled from 8x8
    torch.testing.assert_close(out["stages.0"], stage0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["logits"], logits, rtol=1e-5, atol=1e-5)
    assert not model.stages[0]._forward_hooks  # the taps are removed


def test_forward_batches_derived_features():
    model, x = _cnn(), torch.randn(6, 1, 8, 8)
    derived = {"norm": ("stages.1", lambda t: t.flatten(1).norm(dim=1))}
    out = forward_batches(model, x, CPU, ["norm", "logits"], derived=derived, batch_size=4)
    full = forward_batches(model, x, CPU, ["stages.1"], batch_size=6)["stages.1"]
    torch.testing.assert_close(out["norm"], full.flatten(1).norm(dim=1))


def test_each_is_applied_to_every_batch_before_joining():
    model, x = _cnn(), torch.randn(7, 1, 8, 8)
    seen = []

    def each(feats):
        seen.append(len(feats["logits"]))
        return {k: v.double() * 2 for k, v in feats.items()}

    out = forward_batches(model, x, CPU, ["logits"], batch_size=3, each=each)
    assert seen == [3, 3, 1]
    assert out["logits"].dtype == torch.float64
    torch.testing.assert_close(out["logits"], 2 * _reference(model, x).double(), rtol=1e-5, atol=1e-5)

    plain = forward_batches(model, x, CPU, batch_size=3, each=lambda t: t[:, :2])  # a tensor result
    torch.testing.assert_close(plain, _reference(model, x)[:, :2], rtol=1e-5, atol=1e-5)


def test_transform_gets_each_batch_and_its_slice():
    model = build_model("mlp", in_features=4, hidden=[3], num_classes=2)
    x = torch.randn(5, 4)
    slices = []

    def transform(xb, where):
        slices.append((where.start, where.stop))
        return xb + where.start  # depends on the slice: proves the right one is passed

    out = forward_batches(model, x, CPU, batch_size=2, transform=transform)
    assert slices == [(0, 2), (2, 4), (4, 5)]
    shifted = x + torch.tensor([0, 0, 2, 2, 4.0])[:, None]
    torch.testing.assert_close(out, _reference(model, shifted), rtol=1e-5, atol=1e-5)


def test_list_input_turned_into_tensors_by_transform():
    model = build_model("mlp", in_features=4, hidden=[3], num_classes=2)
    rows = [torch.randn(4) for _ in range(5)]  # a sliceable sequence, not a tensor

    def transform(items, where):
        assert isinstance(items, list) and len(items) == where.stop - where.start
        return torch.stack(items)

    out = forward_batches(model, rows, CPU, batch_size=2, transform=transform)
    torch.testing.assert_close(out, _reference(model, torch.stack(rows)), rtol=1e-5, atol=1e-5)


def test_no_gradients_are_recorded():
    model, x = _cnn(), torch.randn(4, 1, 8, 8, requires_grad=True)
    out = forward_batches(model, x, CPU, ["stages.0", "logits"], batch_size=2)
    assert all(not v.requires_grad and v.grad_fn is None for v in out.values())
    assert torch.is_grad_enabled()  # only inside the call
    assert all(p.grad is None for p in model.parameters())


class _Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("model broke")
        return self.body(x)


def test_training_mode_and_taps_restored_after_the_model_raises():
    model = _Fails()
    with pytest.raises(RuntimeError, match="model broke"):
        forward_batches(model, torch.randn(4, 3), CPU, ["body"], batch_size=2)
    assert model.training and model.body.training
    assert not model.body._forward_hooks


def test_forward_batches_refuses_empty_inputs():
    with pytest.raises(ValueError, match="no inputs"):
        forward_batches(nn.Linear(3, 2), torch.zeros(0, 3), CPU)


def test_dry_features_returns_the_tapped_shapes():
    model = _cnn()
    feats = dry_features(model, ["stages.1", "logits"], "student", torch.randn(2, 1, 8, 8))
    assert feats["stages.1"].shape == (2, 8, 4, 4) and feats["logits"].shape == (2, 10)
    assert model.training


def test_dry_features_names_the_input_shape_on_a_mismatch():
    model = _cnn()  # sized for 8x8 images
    with pytest.raises(KDistillError) as info:
        dry_features(model, ["logits"], "teacher", torch.randn(2, 1, 16, 16))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("teacher: ") and "(1, 16, 16)" in message and "image_size" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert model.training and not model.stages[0]._forward_hooks


# ---- texts: batched by length, each batch cut to its longest text, results in input order ------

LENGTHS = [1, 9, 3, 12, 2, 7, 5, 4, 11, 6]  # words a text, in no order


@pytest.fixture
def texts(tiny_bert):
    """A view of texts of many lengths, tokenised as a run's text source does: ``(N, 2, L)``,
    every text padded to the longest."""
    from fixtures import TINY_WORDS

    from kdistill.data.samples import Inputs
    from kdistill.data.text import TokenSource
    from kdistill.data.tokenizer import load_tokenizer

    lines = [" ".join(TINY_WORDS[(i + j) % len(TINY_WORDS)] for j in range(n)) for i, n in enumerate(LENGTHS)]
    source = TokenSource(lines, torch.zeros(len(lines)), load_tokenizer(str(tiny_bert)), max_length=32)
    return Inputs(source)


def _encoder(tiny_bert):
    # trim=False: the model runs whatever length it is given, so only forward_batches can cut
    return build_model("hf", path=str(tiny_bert), trim=False)


def _seen_lengths(model):
    """The attention masks of every input the model is called on, in call order."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 1].clone()))
    return seen


@pytest.mark.parametrize("batch_size", [1, 3, 4, 100])
def test_texts_by_length_give_the_unsorted_results(tiny_bert, texts, batch_size):
    model = _encoder(tiny_bert)
    x = texts[:]  # (N, 2, L): every text padded to the longest
    expected = _reference(model, x)
    out = forward_batches(model, texts, CPU, batch_size=batch_size)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # with the taps a run reads, and each batch's results moved as a run moves them
    feats = forward_batches(model, texts, CPU, ["logits"], batch_size=batch_size,
                            each=lambda f: {k: v.double() for k, v in f.items()})
    torch.testing.assert_close(feats["logits"], expected.double(), rtol=1e-4, atol=1e-5)


def test_texts_are_batched_by_length_and_cut_to_each_batchs_longest(tiny_bert, texts):
    model = _encoder(tiny_bert)
    seen = _seen_lengths(model)
    forward_batches(model, texts, CPU, batch_size=3)
    full = texts.shape[-1]
    # the batch of the shortest texts runs twice first (at full length, then cut: the check that
    # cutting changes nothing), then the batches longest first, each cut to its longest text
    assert [m.shape for m in seen[:2]] == [(1, full), (1, seen[1].sum().item())]
    batches = seen[2:]
    assert [len(m) for m in batches] == [3, 3, 3]
    assert all(m[:, -1].any() for m in batches)  # no column of padding alone
    longest = [int(m.sum(1).max()) for m in batches]
    assert longest == sorted(longest, reverse=True) and longest[0] == full > longest[-1]
    assert sum(m.numel() for m in batches) < 9 * full  # less padding than every text at full length


def test_token_features_keep_the_sets_length(tiny_bert, texts):
    """A feature of one row a token changes shape when the padding is cut: the pass then keeps
    every batch at the set's length, and the features equal the unsorted ones."""
    model = _encoder(tiny_bert)
    x = texts[:]
    model.eval()
    with torch.no_grad(), FeatureTaps(model, ["model.encoder.layer.0"], "teacher") as taps:
        expected = taps.collect(model(x))["model.encoder.layer.0"]
    model.train()
    out = forward_batches(model, texts, CPU, ["model.encoder.layer.0", "logits"], owner="teacher", batch_size=3)
    assert out["model.encoder.layer.0"].shape == (len(LENGTHS), x.shape[-1], 32)
    torch.testing.assert_close(out["model.encoder.layer.0"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["logits"], _reference(model, x), rtol=1e-4, atol=1e-5)


def test_a_model_that_reads_the_padding_is_not_cut(texts):
    class PaddingCounter(nn.Module):  # its output depends on how many columns it is given
        def forward(self, x):
            return (x[:, 0].float().sum(1, keepdim=True) + x.shape[-1]).expand(-1, 2)

    model = PaddingCounter()
    out = forward_batches(model, texts, CPU, batch_size=3)
    torch.testing.assert_close(out, model(texts[:]))


def test_other_inputs_keep_their_order_and_length(tiny_bert):
    model = _encoder(tiny_bert)
    x = model.tokenize(["sun", "the dog runs over the road", "a bird"])  # a tensor: not a view of texts
    expected = _reference(model, x)
    seen = _seen_lengths(model)
    torch.testing.assert_close(forward_batches(model, x, CPU, batch_size=2), expected)
    assert [m.shape for m in seen] == [(2, x.shape[-1]), (1, x.shape[-1])]


# ---- progress -----------------------------------------------------------------------------------

def test_a_pass_shows_a_bar_of_samples_rate_and_time_left(monkeypatch):
    model, x = _cnn(), torch.randn(10, 1, 8, 8)
    terminal = as_terminal(monkeypatch)
    with progress.shown(True):
        forward_batches(model, x, CPU, batch_size=4, desc="teacher outputs")
    bar = terminal.getvalue()
    assert "teacher outputs" in bar and "/10 " in bar  # samples done of 10
    assert " samples/s" in bar and "<" in bar  # the rate, and elapsed<left


def test_no_bar_when_progress_is_off_or_stderr_is_no_terminal(monkeypatch):
    model, x = _cnn(), torch.randn(10, 1, 8, 8)
    terminal = as_terminal(monkeypatch)
    forward_batches(model, x, CPU, batch_size=4, desc="teacher outputs")  # off by default
    with progress.shown(False):
        forward_batches(model, x, CPU, batch_size=4, desc="teacher outputs")
    with progress.shown(True):
        forward_batches(model, x, CPU, batch_size=4)  # a pass without a name: never a bar
    assert terminal.getvalue() == ""
    log = io.StringIO()  # a log file: no bar either
    monkeypatch.setattr(sys, "stderr", log)
    with progress.shown(True):
        forward_batches(model, x, CPU, batch_size=4, desc="teacher outputs")
    assert log.getvalue() == ""
