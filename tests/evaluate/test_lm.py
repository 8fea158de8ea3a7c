"""Language-model evaluation (kdistill/evaluate/lm.py): perplexity, agreement and token KL
against full logits by hand, generation speed and continuations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdistill.evaluate.lm import continuations, generation_speeds, prompts_from, token_metrics
from kdistill.models.hf_causal import hf_causal
from lm_fixtures import save_tiny_causal


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    teacher = hf_causal(str(save_tiny_causal(folder / "t", "llama", seed=0, sharpen=4.0))).eval()
    student = hf_causal(str(save_tiny_causal(folder / "s", "qwen2", seed=1, tokenizer=folder / "t"))).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(teacher.vocab_size, (5, 9), generator=g)
    attention = torch.ones_like(ids)
    attention[3, 6:] = 0
    loss_mask = attention.clone()
    loss_mask[:, 0] = 0
    loss_mask[4, :4] = 0  # a prompt
    return teacher, student, torch.stack([ids, attention, loss_mask], 1)


def test_metrics_equal_full_logits_by_hand(pair):
    teacher, student, x = pair
    with torch.no_grad():
        s = F.log_softmax(student.logits(x)[:, :-1], -1)
        t = F.log_softmax(teacher.logits(x)[:, :-1], -1)
    keep = x[:, 2, 1:].bool()
    ids = x[:, 0, 1:]
    nll = -s.gather(-1, ids[..., None])[..., 0][keep].mean()
    agree = (s.argmax(-1) == t.argmax(-1))[keep].float().mean()
    kl = (t.exp() * (t - s)).sum(-1)[keep].mean()
    got = token_metrics(student, x, torch.device("cpu"), teacher, batch_size=2)
    assert got["tokens"] == int(keep.sum())
    assert got["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
    assert got["agreement"] == pytest.approx(float(agree))
    assert got["kl_to_teacher"] == pytest.approx(float(kl), rel=1e-4)
    alone = token_metrics(teacher, x, torch.device("cpu"), limit=2)
    assert set(alone) == {"perplexity", "tokens"} and alone["tokens"] == int(keep[:2].sum())
    assert token_metrics(teacher, x, torch.device("cpu"), teacher)["agreement"] == 1.0


def test_speed_and_continuations(pair):
    teacher, _, x = pair
    prompts = prompts_from(x, 2, 4)
    assert prompts.shape == (2, 4) and torch.equal(prompts[0], x[0, 0, :4])
    speeds = generation_speeds({"a": teacher, "b": teacher}, prompts, 3, 5, torch.device("cpu"), repeats=1)
    assert set(speeds) == {"a", "b"} and all(v > 0 for v in speeds.values())
    out = continuations(teacher, prompts, 6, torch.device("cpu"))
    assert len(out) == 2 and all(isinstance(o["continuation"], str) and o["prompt"] for o in out)
    again = continuations(teacher, prompts, 6, torch.device("cpu"))
    assert out == again  # greedy: the same every time


def test_a_long_pass_over_the_test_set_shows_a_bar(pair, monkeypatch):
    import io
    import sys

    from kdistill import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    teacher, student, x = pair
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.setattr(sys, "stderr", Terminal())
    quiet = token_metrics(student, x, torch.device("cpu"), teacher, batch_size=2, desc="student: test set")
    assert sys.stderr.getvalue() == ""  # off unless the job shows progress
    with progress.shown(True):
        shown = token_metrics(student, x, torch.device("cpu"), teacher, batch_size=2, desc="student: test set")
    assert "student: test set:" in sys.stderr.getvalue() and "/5 " in sys.stderr.getvalue()
    assert shown == quiet


def test_speeds_time_the_models_in_turn():
    calls = []

    class Recorder(nn.Module):  # generate records who ran; nothing is generated
        def __init__(self, name):
            super().__init__()
            self.name = name

        def generate(self, ids, **kw):
            calls.append(self.name)
            assert kw["max_new_tokens"] == kw["min_new_tokens"] == 4
            return ids

    speeds = generation_speeds({"teacher": Recorder("t"), "student": Recorder("s")}, torch.zeros(2, 3).long(), 4, 4,
                               torch.device("cpu"), repeats=2)
    assert calls == ["t", "s"] * 3  # a warm-up round, then 2 timed rounds, alternating
    assert set(speeds) == {"teacher", "student"} and all(v > 0 for v in speeds.values())
