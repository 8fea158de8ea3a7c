"""Token-level losses (kdistill/losses/token.py): each divergence by hand, the chunked
projection against full logits (values and gradients), masks, temperature, TRL's convention,
and peak memory against the naive form."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdistill.losses import build_loss
from kdistill.losses.token import divergence

P_T = np.array([0.7, 0.2, 0.1])
P_S = np.array([0.3, 0.3, 0.4])


def _kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def _logs(*ps):
    return [torch.tensor(np.log(p), dtype=torch.float64)[None] for p in ps]


@pytest.mark.parametrize("kind, expected", [
    ("forward_kl", _kl(P_T, P_S)),
    ("reverse_kl", _kl(P_S, P_T)),
    ("tv", 0.5 * float(np.abs(P_T - P_S).sum())),
])
def test_divergences_by_hand(kind, expected):
    log_t, log_s = _logs(P_T, P_S)
    assert float(divergence(log_t, log_s, kind)) == pytest.approx(expected, rel=1e-12)


def test_jsd_by_hand_and_its_two_limits():
    log_t, log_s = _logs(P_T, P_S)
    for beta in (0.1, 0.5, 0.9):
        m = beta * P_T + (1 - beta) * P_S
        expected = beta * _kl(P_T, m) + (1 - beta) * _kl(P_S, m)
        assert float(divergence(log_t, log_s, "jsd", beta=beta)) == pytest.approx(expected, rel=1e-12)
    # the general formula tends to 0 at both ends; the ends are the KL limits
    assert float(divergence(log_t, log_s, "jsd", beta=1e-6)) < 1e-5
    assert float(divergence(log_t, log_s, "jsd", beta=0.0)) == pytest.approx(_kl(P_T, P_S))
    assert float(divergence(log_t, log_s, "jsd", beta=1.0)) == pytest.approx(_kl(P_S, P_T))
    # near beta = 0, JSD_beta / beta approaches the forward KL (the limit's direction)
    assert float(divergence(log_t, log_s, "jsd", beta=1e-4)) / 1e-4 == pytest.approx(_kl(P_T, P_S), rel=1e-3)


def test_skew_kl_by_hand_both_directions():
    log_t, log_s = _logs(P_T, P_S)
    a = 0.3
    forward = _kl(P_T, a * P_T + (1 - a) * P_S)
    reverse = _kl(P_S, a * P_S + (1 - a) * P_T)
    assert float(divergence(log_t, log_s, "skew_kl", skew=a)) == pytest.approx(forward, rel=1e-12)
    assert float(divergence(log_t, log_s, "skew_kl", skew=a, direction="reverse")) == pytest.approx(reverse, rel=1e-12)
    assert float(divergence(log_t, log_s, "skew_kl", skew=0.0)) == pytest.approx(_kl(P_T, P_S))


def _batch(seed=0, B=3, L=7, d=5, V=11, d_t=6):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, L, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(B, L, d_t, generator=g, dtype=torch.float64)
    wt = torch.randn(V, d_t, generator=g, dtype=torch.float64)
    ids = torch.randint(V, (B, L), generator=g)
    attention = torch.ones(B, L, dtype=torch.long)
    attention[1, 5:] = 0  # right padding
    loss_mask = attention.clone()
    loss_mask[:, 0] = 0
    loss_mask[2, :3] = 0  # a prompt: its tokens are not targets
    return hs, (w, b), ht, (wt, None), torch.stack([ids, attention, loss_mask], 1)


def _naive(hs, head, ht, t_head, x, kind, T=1.0, **args):
    """Full logits, log-softmax, divergence, masked mean (the form the chunked loss replaces)."""
    s = F.linear(hs, *head)[:, :-1] / T
    t = F.linear(ht, *t_head)[:, :-1] / T
    per = divergence(F.log_softmax(t, -1).flatten(0, 1), F.log_softmax(s, -1).flatten(0, 1), kind, **args)
    mask = x[:, 2, 1:].flatten().double()
    return (per * mask).sum() / mask.sum() * T * T


@pytest.mark.parametrize("kind, args", [("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.3}),
                                        ("skew_kl", {"skew": 0.2, "direction": "reverse"}), ("tv", {})])
@pytest.mark.parametrize("chunk", [1, 4, 0])
def test_chunked_equals_full_logits_values_and_gradients(kind, args, chunk):
    hs, head, ht, t_head, x = _batch()
    loss = build_loss("token_kd", divergence=kind, temperature=2.0, chunk=chunk, **args)
    value = loss((hs, head), (ht, t_head), None, inputs=x)
    value.backward()
    grads = [hs.grad.clone(), head[0].grad.clone(), head[1].grad.clone()]
    for p in (hs, *head):
        p.grad = None
    naive = _naive(hs, head, ht, t_head, x, kind, T=2.0, **args)
    naive.backward()
    assert float(value.detach()) == pytest.approx(float(naive.detach()), rel=1e-9, abs=1e-12)
    for got, want in zip(grads, [hs.grad, head[0].grad, head[1].grad]):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-12)


def test_teacher_logits_instead_of_hidden_states_and_masked_positions_ignored():
    hs, head, ht, t_head, x = _batch(1)
    loss = build_loss("token_kd", divergence="forward_kl")
    logits_t = F.linear(ht, *t_head)
    assert float(loss((hs, head), logits_t, None, inputs=x)) == pytest.approx(
        float(loss((hs, head), (ht, t_head), None, inputs=x)), rel=1e-12)
    changed = ht.clone()
    changed[1, 5:] = 100.0  # padding positions: no prediction of theirs counts
    changed[2, :2] = -50.0  # positions predicting prompt tokens
    changed[:, -1] = 7.0  # the last position predicts nothing
    assert float(loss((hs, head), (changed, t_head), None, inputs=x)) == pytest.approx(
        float(loss((hs, head), (ht, t_head), None, inputs=x)), rel=1e-12)


def test_zero_when_the_student_is_the_teacher_and_temperature_squared():
    hs, head, _, _, x = _batch(2)
    same = (hs.detach().clone(), tuple(p.detach().clone() for p in head))
    for kind in ("forward_kl", "reverse_kl", "jsd", "skew_kl", "tv"):
        assert abs(float(build_loss("token_kd", divergence=kind)((hs, head), same, None, inputs=x))) < 1e-12
    hs2, head2, ht, t_head, _ = _batch(3)
    at_one = _naive(hs2, head2, ht, t_head, x, "forward_kl", T=1.0)
    assert float(build_loss("token_kd", temperature=1.0)((hs2, head2), (ht, t_head), None, inputs=x)) == \
        pytest.approx(float(at_one))
    scaled = build_loss("token_kd", temperature=3.0)((hs2, head2), (ht, t_head), None, inputs=x)
    s = F.log_softmax(F.linear(hs2, *head2)[:, :-1] / 3, -1)
    t = F.log_softmax(F.linear(ht, *t_head)[:, :-1] / 3, -1)
    mask = x[:, 2, 1:].bool()
    by_hand = 9 * (t.exp() * (t - s)).sum(-1)[mask].mean()
    assert float(scaled) == pytest.approx(float(by_hand), rel=1e-10)


def test_cross_entropy_on_the_data_tokens():
    hs, head, _, _, x = _batch(4)
    logits = F.linear(hs, *head)[:, :-1]
    labels = x[:, 0, 1:].clone()
    labels[x[:, 2, 1:] == 0] = -100
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    for chunk in (1, 5, 0):
        assert float(build_loss("token_ce", chunk=chunk)((hs, head), None, None, inputs=x)) == \
            pytest.approx(float(expected), rel=1e-10)


def test_ids_only_inputs_count_every_next_token():
    hs, head, ht, t_head, x = _batch(5)
    ids = x[:, 0]
    full = torch.stack([ids, torch.ones_like(ids), torch.ones_like(ids)], 1)
    loss = build_loss("token_kd")
    assert float(loss((hs, head), (ht, t_head), None, inputs=ids)) == pytest.approx(
        float(loss((hs, head), (ht, t_head), None, inputs=full)), rel=1e-12)


def test_arguments_are_checked():
    for bad in ({"divergence": "kl"}, {"beta": 1.5}, {"skew": 1.0}, {"temperature": 0}, {"direction": "up"}):
        with pytest.raises(Exception):
            build_loss("token_kd", **bad)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_matches_trl_generalized_jsd_loss(beta):
    """TRL's GKD loss (trl.experimental.gkd) on full logits, labels -100 where not counted,
    reduction batchmean (a mean over counted tokens); kdistill multiplies by T^2, TRL does not."""
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    hs, head, ht, t_head, x = _batch(6)
    s, t = F.linear(hs, *head)[:, :-1].detach(), F.linear(ht, *t_head)[:, :-1]
    labels = x[:, 0, 1:].clone()
    labels[x[:, 2, 1:] == 0] = -100
    T = 2.0
    theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=T)
    ours = build_loss("token_kd", divergence="jsd", beta=beta, temperature=T)((hs, head), (ht, t_head), None, inputs=x)
    assert float(ours) == pytest.approx(float(theirs) * T * T, rel=1e-9)


MEMORY_SCRIPT = r"""
import json, resource, sys
import torch, torch.nn.functional as F
torch.manual_seed(0)
B, L, d, V = 8, 512, 64, 32000
form = sys.argv[1]
hs = torch.randn(B, L, d, requires_grad=True)
w = (torch.randn(V, d) * 0.05).requires_grad_()
ht, wt = torch.randn(B, L, d), torch.randn(V, d) * 0.05
x = torch.stack([torch.randint(V, (B, L)), torch.ones(B, L, dtype=torch.long), torch.ones(B, L, dtype=torch.long)], 1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if form == "naive":
    s = F.log_softmax(F.linear(hs, w)[:, :-1].float(), -1)
    t = F.log_softmax(F.linear(ht, wt)[:, :-1].float(), -1)
    loss = F.kl_div(s, t, reduction="sum", log_target=True) / (B * (L - 1))
else:
    from kdistill.losses import build_loss
    loss = build_loss("token_kd")((hs, (w, None)), (ht, (wt, None)), None, inputs=x)
loss.backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mb": (after - before) / 1024, "loss": float(loss)}))
"""


def test_chunked_peak_memory_is_under_a_third_of_full_logits():
    """Batch 8, length 512, vocabulary 32k: the peak resident memory the loss and its backward
    add, in a fresh process each, chunked against full float32 logits and log-softmax."""
    root = Path(__file__).resolve().parents[2]
    runs = {}
    for form in ("naive", "chunked"):
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, form], capture_output=True, text=True,
                             cwd=root, check=True)
        runs[form] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"peak memory added, MB: full logits {runs['naive']['mb']:.0f}, chunked {runs['chunked']['mb']:.0f}")
    assert math.isclose(runs["naive"]["loss"], runs["chunked"]["loss"], rel_tol=1e-4)
    assert runs["naive"]["mb"] > 1000  # the full logits alone are 524 MB in float32
    assert runs["chunked"]["mb"] <= runs["naive"]["mb"] / 3, runs
