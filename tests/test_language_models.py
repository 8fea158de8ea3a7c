"""Causal language models end to end (task: generate): a tiny random teacher of each of three
families (GPT-2, Llama, Qwen2) distilled into a 2-layer cut of itself from a text file, killed
mid-stage and resumed bit for bit, exported, reloaded by transformers, and generating."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdistill import run
from kdistill.errors import KDistillError
from lm_fixtures import lm_texts, save_tiny_causal, save_tiny_tokenizer


def lm_recipe(folder, teacher, **stage) -> dict:
    return {"name": "lm", "seed": 0, "threads": 1, "device": "cpu", "latency": False,
            "checkpoint": {"every": 3},
            "data": {"source": "lm_text", "path": str(folder / "corpus.txt"), "lm": {"block_size": 24, "test": 20},
                     "val": 6},  # blocks drawn from the training blocks, on which the stage keeps its best epoch
            "teacher": {"model": "hf_causal", "args": {"path": str(teacher)}},
            "student": {"from_teacher": {"layers": 2, "pick": "block"}},
            "stages": [{"name": "distil", "data": "transfer", "epochs": 2, "batch_size": 8, "accumulate": 2, "keep_best": True,
                        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.0},
                        "loss": [{"loss": "token_kd", "args": {"divergence": "jsd", "beta": 0.5}},
                                 {"loss": "token_ce", "weight": 0.0},  # listed, weight 0: skipped
                                 {"loss": "hint", "weight": 0.01, "student": f"model.{_layers(teacher)}.1",
                                  "teacher": f"model.{_layers(teacher)}.3"}], **stage}]}


def _layers(folder) -> str:
    config = json.loads((folder / "config.json").read_text())
    return "transformer.h" if config["model_type"] == "gpt2" else "model.layers"


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    teacher = save_tiny_causal(folder / "teacher", request.param, sharpen=6.0)
    (folder / "corpus.txt").write_text("\n".join(lm_texts(160)))
    result = run(lm_recipe(folder, teacher), runs_dir=folder / "whole", progress=False)
    return request.param, folder, teacher, result


def test_distilled_cut_is_judged_exported_and_generates(family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, folder, teacher, result = family
    test = result.summary["test"]
    assert set(test) == {"teacher", "cut", "student"}
    assert test["student"]["params"] == test["cut"]["params"] < test["teacher"]["params"]
    assert test["student"]["kl_to_teacher"] < test["cut"]["kl_to_teacher"]  # distillation moved it towards the teacher
    assert all(0 <= test[r]["agreement"] <= 1 for r in ("cut", "student"))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r["val"]["perplexity"] for r in records[:2]]  # judged on the validation blocks, not the held-out texts
    assert records[2]["kept_epoch"] == 1 + val.index(min(val)) and records[2]["score"] == -min(val)
    report = (result.run_dir / "report.md").read_text(encoding="utf8")
    assert "perplexity" in report and "Sample continuations" in report
    kept = result.summary["student_kept_layers"]  # the contiguous block dropped, ranked on data
    assert len(kept) == 2 and kept == sorted(kept) and f"keeps the teacher's layers {kept}" in report
    exported = result.run_dir / "student_hf"
    model = AutoModelForCausalLM.from_pretrained(exported)
    tok = AutoTokenizer.from_pretrained(exported)
    assert model.config.num_hidden_layers == 2
    ids = tok("the dog runs over the", return_tensors="pt").input_ids
    student = result.student.cpu().eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, student.logits(ids), atol=1e-5)
    out = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5)
    saved = load_file(result.run_dir / "student.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in student.state_dict().items() if k in saved)


def test_killed_language_model_run_resumes_bit_for_bit(family, tmp_path):
    name, folder, teacher, result = family
    expected = load_file(result.run_dir / "student.safetensors")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump(lm_recipe(folder, teacher)))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "kdistill.cli", "run", str(recipe_path), "--runs-dir", str(runs),
                             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = runs / "lm.incomplete" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoints.exists() and any(checkpoints.glob("ckpt-*.pt"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(checkpoints.glob("ckpt-*.pt")), "killed before the first checkpoint"
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "--resume", str(runs / "lm.incomplete"),
                           "--runs-dir", str(runs), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = load_file(runs / "lm" / "student.safetensors")
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_teacher_and_student_of_different_vocabularies_are_refused(tmp_path):
    teacher = save_tiny_causal(tmp_path / "teacher", "llama")
    save_tiny_tokenizer(tmp_path / "tokenizer300", vocab_size=300)
    other = save_tiny_causal(tmp_path / "other", "llama", tokenizer=tmp_path / "tokenizer300")
    (tmp_path / "corpus.txt").write_text("\n".join(lm_texts(80)))
    recipe = lm_recipe(tmp_path, teacher)
    recipe["student"] = {"model": "hf_causal", "args": {"path": str(other)}}
    recipe["stages"][0]["loss"] = recipe["stages"][0]["loss"][:1]
    with pytest.raises(KDistillError, match="vocabular"):
        run(recipe, runs_dir=tmp_path / "runs", progress=False)


def test_a_disk_cache_of_the_teachers_hidden_states_trains_like_the_live_teacher(family, tmp_path):
    """cache: the teacher's final hidden states (and tapped layers) stored in half precision, its
    output projection applied as the loss needs it; top-k logits do not apply and are refused."""
    name, folder, teacher, result = family
    recipe = lm_recipe(folder, teacher)
    recipe["stages"][0]["cache"] = {"dir": str(tmp_path / "cache")}
    cached = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    live, disk = result.summary["test"]["student"], cached.summary["test"]["student"]
    assert disk["kl_to_teacher"] == pytest.approx(live["kl_to_teacher"], rel=0.05, abs=1e-3)
    assert any((tmp_path / "cache").iterdir())
    recipe["stages"][0]["cache"]["topk"] = 8
    with pytest.raises(KDistillError, match="drop cache.topk"):
        run(recipe, runs_dir=tmp_path / "runs2", progress=False)


def test_prompt_response_pairs_are_judged_on_the_responses_alone(tmp_path):
    """lm_pairs through a chat template: the loss and the held-out figures count the response
    tokens (and their end token) only."""
    from lm_fixtures import LM_WORDS

    save_tiny_tokenizer(tmp_path / "tok", chat=True)
    teacher = save_tiny_causal(tmp_path / "teacher", "qwen2", tokenizer=tmp_path / "tok", sharpen=6.0)
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(60):
        words = [LM_WORDS[j] for j in torch.randint(len(LM_WORDS), (6,), generator=g).tolist()]
        lines.append(json.dumps({"prompt": " ".join(words[:3]), "response": " ".join(words[3:]) + "."}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines))
    recipe = lm_recipe(tmp_path, teacher)
    recipe["data"] = {"source": "lm_pairs", "path": str(tmp_path / "pairs.jsonl"), "lm": {"test": 10, "max_length": 40},
                      "val": 6}
    recipe["stages"][0]["loss"] = [{"loss": "token_kd"}]
    result = run(recipe, runs_dir=tmp_path / "runs", progress=False)
    from kdistill.recipe import load_recipe
    from kdistill.data.load import load_sources

    _, test = load_sources(load_recipe(recipe))
    x = test.fetch(torch.arange(len(test)))
    assert result.summary["test"]["student"]["tokens"] == int(x[:, 2, 1:].sum()) < int(x[:, 1].sum())
    tok = result.student.tokenizer
    first = x[0, 0][x[0, 2].bool()]
    assert tok.decode(first.tolist()).endswith(tok.eos_token)  # the response and its end token
