"""A batch split into micro-batches (``accumulate``) or over processes (DDP, gloo) gives the
gradients the whole batch gives on one process, in float64 to 1e-6: each term is a mean over its
own items (samples, labelled samples, counted tokens), counted over the whole batch. The weighting
used before, each part by its share of the *samples*, fails the same comparison (checked here)."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from kdistill.data.batch import Batch
from kdistill.models.infer import freeze
from kdistill.models.zoo import build_model
from kdistill.objective.core import Objective, build_objective
from kdistill.recipe import StageSpec
from kdistill.train import loop

CPU = torch.device("cpu")
# plain SGD, no decay or clipping: the comparison is of the gradients themselves; the live teacher
# (the memo keeps its outputs in float32)
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
STAGE = {"optimizer": SGD, "grad_clip": None, "cache_teacher": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Float64(torch.nn.Module):
    """Inputs (held as float32 by the data layer) in float64."""

    def forward(self, x):
        return x.double()


def images(accumulate: int = 1):
    """kd with alpha 0.5 (soft targets over samples, CE over labelled samples) on 16 digits-sized
    inputs whose labels sit in the last 4 only: micro-batches of 4 hold 0, 0, 0 and 4 labels."""
    torch.manual_seed(0)
    teacher = freeze(torch.nn.Sequential(Float64(), build_model("mlp", in_features=64, hidden=[32]).double()))
    student = torch.nn.Sequential(Float64(), build_model("mlp", in_features=64, hidden=[16]).double())
    x = torch.randn(16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([-1] * 12 + [3, 1, 4, 1])
    objective = build_objective([{"loss": "kd", "args": {"alpha": 0.5, "temperature": 2.0}},
                                 {"loss": "ce", "weight": 0.3}, {"loss": "entropy", "weight": 0.1}]).double()
    stage = StageSpec(name="s", batch_size=16, accumulate=accumulate, **STAGE)
    return student, objective, x, y, stage, teacher


def write_pairs(folder) -> None:
    """A chat tokenizer, a tiny Qwen2 teacher and 16 prompt/response pairs whose responses run from
    one word to thirty."""
    from lm_fixtures import LM_WORDS, save_tiny_causal, save_tiny_tokenizer

    save_tiny_tokenizer(folder / "tok", chat=True)
    save_tiny_causal(folder / "teacher", "qwen2", tokenizer=folder / "tok", sharpen=4.0)
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(16):
        n = [1, 30, 2, 18][i % 4]
        words = [LM_WORDS[j] for j in torch.randint(len(LM_WORDS), (3 + n,), generator=g).tolist()]
        lines.append(json.dumps({"prompt": " ".join(words[:3]), "response": " ".join(words[3:]) + "."}))
    (folder / "pairs.jsonl").write_text("\n".join(lines))


def pairs(folder, accumulate: int = 1):
    """token_kd + token_ce on a 2-layer cut of the teacher, float64, the 16 pairs one batch."""
    from kdistill.pipeline import build_pipeline
    from kdistill.recipe import load_recipe

    torch.manual_seed(0)
    recipe = load_recipe({
        "name": "pairs", "seed": 0, "device": "cpu", "latency": False,
        "data": {"source": "lm_pairs", "path": str(folder / "pairs.jsonl"), "lm": {"test": 1, "max_length": 64}},
        "teacher": {"model": "hf_causal", "args": {"path": str(folder / "teacher")}},
        "student": {"from_teacher": {"layers": 2, "pick": "block"}},
        "stages": [{"name": "distil", "data": "transfer", "batch_size": 16, "accumulate": accumulate, **STAGE,
                    "loss": [{"loss": "token_kd", "args": {"divergence": "jsd", "beta": 0.3}},
                             {"loss": "token_ce", "weight": 0.5}]}]})
    p = build_pipeline(recipe)
    stage = recipe.stages[0]
    x, y = p.stage_data(stage)
    return p.models["student"].double(), p.objectives["distil"].double(), x, y, stage, \
        freeze(p.models["teacher"].double())


def gradients(student, objective, x, y, stage, teacher, index=None) -> dict[str, torch.Tensor]:
    """The gradients of one step on samples ``index`` (all: None), this process's share of them."""
    from kdistill import distributed

    t = loop.setup(student, objective, x, y, stage, CPU, teacher)
    try:
        index = torch.arange(len(y)) if index is None else index
        share, counted = distributed.local_share(index)
        [(i, xb, yb)] = list(t.loader.epoch([share], view=(0, 0)))
        terms = loop.step(t, Batch.fetched(i, xb, yb, CPU, t.x), counted)
        assert all(torch.isfinite(v) for v in terms.values())
        return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    finally:
        t.close()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-9, msg=k)


def OLD_COUNTS(self, x, y):
    """The old weighting: every kind counted as samples (each part by its share of the samples)."""
    return torch.full((len(self.kinds()),), float(len(y)), dtype=torch.float64)


def samples_only(monkeypatch) -> None:
    monkeypatch.setattr(Objective, "counts", OLD_COUNTS)


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    write_pairs(folder)
    return folder


def test_kd_with_labels_in_one_micro_batch_accumulates_exactly(monkeypatch):
    whole = gradients(*images(accumulate=1))
    assert_same(gradients(*images(accumulate=4)), whole)
    samples_only(monkeypatch)
    with pytest.raises(AssertionError):
        assert_same(gradients(*images(accumulate=4)), whole)


def test_token_losses_on_responses_of_different_lengths_accumulate_exactly(lm_folder, monkeypatch):
    student, objective, x, y, stage, teacher = pairs(lm_folder)
    counted = x[torch.arange(len(x))][:, 2].sum(1)  # (B,) response tokens
    assert counted.max() > 5 * counted.min()  # the micro-batches hold very different token counts
    whole = gradients(student, objective, x, y, stage, teacher)
    assert_same(gradients(*pairs(lm_folder, accumulate=4)), whole)
    samples_only(monkeypatch)
    with pytest.raises(AssertionError):
        assert_same(gradients(*pairs(lm_folder, accumulate=4)), whole)


# one global batch for two processes: whole, a tail of 3 (shares of 2 and 1), a tail of 1 (rank 1
# has none: it steps on a stand-in that counts for nothing)
BATCHES = {"whole": None, "tail3": [0, 5, 13], "tail1": [13]}


def _ddp_gradients(folder) -> dict[str, dict]:
    out = {}
    for name, index in BATCHES.items():
        out[f"images-{name}"] = gradients(*images(accumulate=2), index=None if index is None else torch.tensor(index))
    out["pairs"] = gradients(*pairs(folder, accumulate=2))
    return out


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        new = _ddp_gradients(Path(folder))
        Objective.counts = OLD_COUNTS  # then the old weighting
        old = _ddp_gradients(Path(folder))
        if rank == 0:
            torch.save({"new": new, "old": old}, os.path.join(folder, "ddp.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_gradients_of_one(lm_folder):
    mp.start_processes(_worker, args=(2, _free_port(), str(lm_folder)), nprocs=2, start_method="spawn")
    two = torch.load(lm_folder / "ddp.pt")
    for name, index in BATCHES.items():
        index = None if index is None else torch.tensor(index)
        assert_same(two["new"][f"images-{name}"], gradients(*images(), index=index))
    assert_same(two["new"]["pairs"], gradients(*pairs(lm_folder)))
    # the old weighting, each process's share by its share of the samples, does not
    with pytest.raises(AssertionError):
        assert_same(two["old"]["pairs"], two["new"]["pairs"])
    with pytest.raises(AssertionError):
        assert_same(two["old"]["images-whole"], two["new"]["images-whole"])
