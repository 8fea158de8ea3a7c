"""Golden students: every recipe in the repository and every registered loss, run briefly on
scikit-learn's digits, must give the exact trained tensors recorded in ``golden/students.json``.

A refactor that changes no behaviour leaves every hash as it is. The hashes depend on the
torch build, so they are checked only under the torch version that recorded them:

    python tests/test_golden.py --record     # after a deliberate change of behaviour, say why
    python tests/test_golden.py --record --only loss:token_kd   # a new case, the others kept
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "students.json"

# repository recipes moved onto digits: 8x8 images, no pretrained weights, one epoch a stage
DIGIT_MODELS = ["data.source=digits", "data.labelled=50", "data.path=null", "teacher.weights=null",
                "teacher.args.image_size=8", "student.args.image_size=8", "latency=false"]
RECIPES = {
    "demo": ("kdistill/recipes/demo.yaml", DIGIT_MODELS),
    "fmnist_teacher": ("kdistill/recipes/fmnist_teacher.yaml",
                       ["data.source=digits", "data.labelled=50", "teacher.args.image_size=8", "latency=false"]),
    "digits_quick": ("recipes/digits_quick.yaml", ["latency=false"]),
    "fmnist_composite": ("recipes/fmnist_composite.yaml", DIGIT_MODELS),
    "fmnist_deep": ("recipes/fmnist_deep.yaml", DIGIT_MODELS),
    "fmnist_shallow": ("recipes/fmnist_shallow.yaml", DIGIT_MODELS),
    "resumable": ("recipes/resumable.yaml", []),
}

TEACHER = {"model": "cnn", "args": {"channels": [8, 16, 16], "hidden": 32, "image_size": 8}}
STUDENT = {"model": "cnn", "args": {"channels": [4, 8, 8], "image_size": 8}}
MAP, MAPS, EMBED, T_EMBED = "stages.2", ["stages.0", "stages.1", "stages.2"], "head.0", "head.3"


def _term(loss: str, student: str | list | None = None, teacher: str | list | None = None, **args) -> dict:
    term = {"loss": loss, "args": args}
    if student is not None:
        term["student"] = student
    if teacher is not None:
        term["teacher"] = teacher
    return term


# each registered loss in a stage of its own beside cross-entropy (on the features it reads)
LOSS_TERMS = {
    "at": _term("at", MAP, MAP), "cc": _term("cc", EMBED, T_EMBED), "ce": _term("ce"),
    "crd": _term("crd", EMBED, T_EMBED, feat_dim=8, num_negatives=16), "dist": _term("dist"),
    "distance_kl": _term("distance_kl", EMBED, "embedding"), "dkd": _term("dkd", beta=2.0),
    "embed_cosine": _term("embed_cosine", EMBED, "embedding"), "embed_mse": _term("embed_mse", EMBED, "embedding"),
    "entropy": _term("entropy"), "fsp": _term("fsp", MAPS, MAPS), "hint": _term("hint", MAP, MAP),
    "kd": _term("kd", temperature=4.0, alpha=0.9), "l2_start": _term("l2_start", start="init"),
    "multi_kd": _term("multi_kd", teacher=["logits", "second:logits"], weighting="confidence"),
    "nst": _term("nst", MAP, MAP), "ovr": _term("ovr"), "pkt": _term("pkt", EMBED, T_EMBED),
    "prototype_kl": _term("prototype_kl", "prototypes", lam=0.1),
    "residual_smooth": _term("residual_smooth", MAP, MAP), "rkd": _term("rkd", EMBED, T_EMBED),
    "scatter": _term("scatter", EMBED), "sp": _term("sp", MAP, MAP), "vid": _term("vid", MAP, MAP),
}
EMBEDDING_LOSSES = {"distance_kl", "embed_cosine", "embed_mse", "prototype_kl"}
# the token losses read a causal language model's hidden states and output projection: a tiny
# random Llama (built from the seed in tests/lm_fixtures.py) cut to 2 of its 4 layers
TOKEN_TERMS = {"token_kd": _term("token_kd", divergence="jsd", beta=0.3, temperature=2.0), "token_ce": _term("token_ce")}


def token_recipe(name: str, folder: Path) -> dict:
    """A tiny Llama teacher and corpus written in ``folder``, then the loss on a 2-layer cut of it."""
    from lm_fixtures import lm_texts, save_tiny_causal

    teacher = save_tiny_causal(folder / "teacher", "llama", sharpen=4.0)
    (folder / "corpus.txt").write_text("\n".join(lm_texts(120)))
    return {"name": f"golden-{name}", "seed": 1, "latency": False, "device": "cpu",
            "data": {"source": "lm_text", "path": str(folder / "corpus.txt"), "lm": {"block_size": 16, "test": 20}},
            "teacher": {"model": "hf_causal", "args": {"path": str(teacher)}},
            "student": {"from_teacher": {"layers": 2, "pick": "block"}},
            "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "batch_size": 16, "accumulate": 2,
                        "optimizer": {"name": "adamw", "lr": 1e-3}, "loss": [TOKEN_TERMS[name]]}]}


def loss_recipe(name: str) -> dict:
    """Digits, a teacher trained for one epoch, then the loss (beside CE) on the labelled+transfer set."""
    recipe = {"name": f"golden-{name}", "seed": 1, "latency": False, "device": "cpu",
              "data": {"source": "digits", "labelled": 100, "val": 50},
              "teacher": TEACHER, "student": STUDENT,
              "stages": [{"name": "teacher", "train": "teacher", "data": "full", "epochs": 1, "batch_size": 64},
                         {"name": "distil", "data": "labelled+transfer", "epochs": 1, "batch_size": 64,
                          "augment": {"shift": 1}, "loss": [LOSS_TERMS[name]]}]}
    if name != "ce":
        recipe["stages"][1]["loss"].insert(0, {"loss": "ce", "weight": 0.5})
    if name in EMBEDDING_LOSSES:
        recipe["embedding"] = {"teacher": T_EMBED, "student": EMBED, "dim": 8, "max_samples": 500}
    if name == "multi_kd":
        recipe["teachers"] = {"second": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}}}
        recipe["stages"] = recipe["stages"][1:]  # several teachers are loaded, not trained
    return recipe


def student_hashes(result) -> dict[str, str]:
    """A hash of every trained model's tensors (names, dtypes, shapes, bytes)."""
    out = {}
    for role, model in sorted(result.models.items()):
        h = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            value = value.detach().cpu().contiguous()
            h.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
            h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        out[role] = h.hexdigest()[:20]
    return out


def run_case(case: str, runs_dir: Path) -> dict[str, str]:
    from kdistill.runner import run as run_recipe

    torch.manual_seed(0)
    torch.set_num_threads(2)  # the recorded thread count (reductions may split by thread)
    if case.startswith("loss:") and case[5:] in TOKEN_TERMS:
        result = run_recipe(token_recipe(case[5:], runs_dir), runs_dir=runs_dir / "runs", progress=False)
    elif case.startswith("loss:"):
        result = run_recipe(loss_recipe(case[5:]), runs_dir=runs_dir, progress=False)
    else:
        path, overrides = RECIPES[case]
        from kdistill.recipe import load_recipe

        recipe = load_recipe(ROOT / path, overrides)
        tree = recipe.model_dump(mode="json")
        for stage in tree["stages"]:
            stage["epochs"] = 1
        tree["threads"] = None
        result = run_recipe(tree, runs_dir=runs_dir, progress=False)
    return student_hashes(result)


CASES = [*RECIPES, *(f"loss:{name}" for name in (*LOSS_TERMS, *TOKEN_TERMS))]


def _recorded() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def test_every_registered_loss_has_a_golden_case():
    from kdistill.losses import LOSSES

    assert set(LOSSES) == set(LOSS_TERMS) | set(TOKEN_TERMS)


@pytest.mark.parametrize("case", CASES)
def test_golden_student(case, tmp_path):
    golden = _recorded()
    if golden.get("torch") != torch.__version__:
        pytest.skip(f"golden hashes were recorded under torch {golden.get('torch')}, this is {torch.__version__}")
    assert run_case(case, tmp_path) == golden["cases"][case]


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/test_golden.py --record")
    import tempfile

    torch.set_num_threads(2)
    cases = {}
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else None  # record these, keep the rest
    if only:
        cases = dict(_recorded()["cases"])
    for case in [c for c in CASES if only is None or c in only]:
        with tempfile.TemporaryDirectory() as folder:
            cases[case] = run_case(case, Path(folder))
        print(case, cases[case], flush=True)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1) + "\n")
