"""Every bad input the docs list gives the project's own one-line error and changes nothing on
disk. ``python tests/test_bad_input.py`` prints the table of messages in docs/errors.md."""

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch

from kdistill import run
from kdistill.errors import KDistillError
from kdistill.recipe import load_recipe

BASE = {"name": "bad", "latency": False, "data": {"source": "digits", "labelled": 100},
        "teacher": {"model": "mlp", "args": {"in_features": 64, "hidden": [16]}},
        "student": {"model": "mlp", "args": {"in_features": 64, "hidden": [8]}},
        "stages": [{"name": "distil", "data": "transfer", "epochs": 1, "loss": [{"loss": "kd"}]}]}


def recipe(**changes):
    tree = copy.deepcopy(BASE)
    for path, value in changes.items():
        node, keys = tree, path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value
    return tree


def malformed_yaml(tmp):
    load_recipe(tmp / "r.yaml")


def write_malformed_yaml(tmp):
    (tmp / "r.yaml").write_text("name: x\nstages: [{name: a, epochs: 1\n")


def nan_inputs(tmp):
    x, y = torch.randn(60, 64), torch.randint(0, 10, (60,))
    x[7, 3] = float("nan")
    run(recipe(data={"source": "custom", "labelled": 20}), data=((x, y), (x[:10], y[:10])), runs_dir=tmp,
        progress=False)


def write_truncated_checkpoint(tmp):
    folder = tmp / "bad.incomplete"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "recipe.yaml").write_text("name: bad\nstages: [{name: a}]\n")
    (folder / "checkpoints" / "ckpt-s00-e00001-b0000000.pt").write_bytes(b"PK\x03\x04 cut short")


def truncated_checkpoint(tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(None, resume=tmp / "bad.incomplete")


def existing_run(tmp):
    run(BASE, runs_dir=tmp, progress=False)


def binary_recipe(tmp):
    (tmp / "r.yaml").write_bytes(bytes(range(256)) * 4)


def runs_dir_is_a_file(tmp):
    (tmp / "runs").write_text("a file")


def pickled_hf_folder(tmp):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text('{"model_type": "bert"}')
    torch.save({"w": torch.zeros(1)}, tmp / "hf" / "pytorch_model.bin")


def run_with_corrupt_predictions(tmp):
    done = run(BASE, runs_dir=tmp / "runs", progress=False).run_dir
    (done / "predictions.safetensors").write_bytes(b"\x00" * 64)


def empty_photo_folder(tmp):
    (tmp / "photos" / "cat").mkdir(parents=True)


def write_short_labels(tmp):
    import numpy as np

    np.save(tmp / "x.npy", np.zeros((30, 1, 8, 8), dtype=np.uint8))
    np.save(tmp / "y.npy", np.zeros(20, dtype=np.int64))


def report(tmp, *more):
    from kdistill.cli import main

    argv = sys.argv
    sys.argv = ["kdistill", "--debug", "report", str(tmp / "runs" / "bad"), *more]
    try:
        main()
    finally:
        sys.argv = argv


def static_teacher(tmp):
    from fixtures import save_static_teacher, write_tiny_sentences

    save_static_teacher(tmp / "teacher")
    write_tiny_sentences(tmp / "s.csv")


def static_run(tmp, student_args=None, loss=None, teacher=True):
    """A static-embedding student of the tiny teacher ``static_teacher`` wrote, on its sentences."""
    tree = {"name": "bad", "latency": False,
            "data": {"source": "csv", "path": str(tmp / "s.csv"), "labelled": 30,
                     "text": {"tokenizer": str(tmp / "teacher"), "test": 40}},
            "student": {"model": "static", "args": student_args or {}},
            "stages": [{"name": "distil", "data": "transfer", "loss": [loss or {"loss": "embed_cosine"}]}]}
    if teacher:
        tree["teacher"] = {"model": "hf", "args": {"path": str(tmp / "teacher")}}
    else:
        tree["stages"][0].update(data="labelled", loss=[{"loss": "ce"}])
    run(tree, runs_dir=tmp / "runs", progress=False)


def mistyped_model_folder(tmp):
    from unittest import mock

    # no hub lookups: the name reads as a model id too, so transformers would try one
    with mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", True):
        run(recipe(teacher={"model": "hf", "args": {"path": "no-such-folder"}}), runs_dir=tmp / "runs", progress=False)


def write_csv_and_tokenizer(tmp):
    from fixtures import write_bert_tokenizer

    (tmp / "mail.csv").write_text("sentence,category\nthe cat sat,ham\n")
    (tmp / "tok").mkdir()
    write_bert_tokenizer(tmp / "tok")


def write_text_teacher(tmp):
    from fixtures import save_tiny_bert, write_tiny_sentences

    save_tiny_bert(tmp / "bert")
    write_tiny_sentences(tmp / "sentences.csv")


def write_mpnet_teacher(tmp):
    import transformers
    from fixtures import ENCODER_VOCAB, write_bert_tokenizer

    folder = tmp / "mpnet"
    transformers.MPNetModel(transformers.MPNetConfig(
        vocab_size=len(ENCODER_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=24, max_position_embeddings=40)).save_pretrained(folder)
    write_bert_tokenizer(folder)


def text_recipe(tmp):
    """A tiny BERT distilled on sentences, its args.max_length (64) not the data's (16)."""
    return recipe(data={"source": "csv", "path": str(tmp / "sentences.csv"), "labelled": 30,
                        "text": {"test": 60, "max_length": 16}},
                  teacher={"model": "hf", "args": {"path": str(tmp / "bert"), "max_length": 64}},
                  student={"from_teacher": {"layers": 1}}, stages__0__loss=[{"loss": "embed_cosine"}])


# --- data that means something else (scaling, a teacher near chance, image size, unreadable files) ---
def write_random_teacher(tmp):
    from kdistill.models.weights import save_weights
    from kdistill.models.zoo import build_model

    torch.manual_seed(0)
    save_weights(build_model("mlp", in_features=64, hidden=[16], num_classes=10), tmp / "random.safetensors")


def write_unreadable_photos(tmp):
    from fixtures import write_photos

    write_photos(tmp / "pics", good=4, bad=3)


def photo_recipe(tmp, **options):
    from fixtures import photo_recipe

    return photo_recipe(tmp / "pics", "bad", **options)


def check_data(tmp):
    from kdistill.data.check_data import check_recipe_data
    from kdistill.recipe import load_recipe

    check_recipe_data(load_recipe(photo_recipe(tmp, test=3)), echo=lambda line: None)


# what a case needs on disk before it runs
SETUP = {"malformed YAML": write_malformed_yaml, "CSV without the label column": write_csv_and_tokenizer,
         "model max_length that differs from data.text.max_length": write_text_teacher,
         "attention heads pruned in a family whose heads kdistill cannot prune": write_mpnet_teacher,
         "truncated or corrupt checkpoint": write_truncated_checkpoint,
         "run directory that already exists": lambda tmp: (tmp / "bad").mkdir(),
         "binary file as the recipe": binary_recipe, "runs directory that is a file": runs_dir_is_a_file,
         "HF model folder holding a pickle": pickled_hf_folder,
         "corrupt predictions.safetensors given to kdistill report": run_with_corrupt_predictions,
         "image folder with no images": empty_photo_folder, "npy labels of the wrong length": write_short_labels,
         "static student wider than its teacher": static_teacher, "static student without a teacher": static_teacher,
         "narrow static student compared with the teacher's own output": static_teacher,
         "teacher from weights that scores near chance": write_random_teacher,
         "unreadable image file in a run": write_unreadable_photos,
         "kdistill check-data on a folder with unreadable files": write_unreadable_photos}

CASES = {
    "mistyped model folder that reads as a model id too": (mistyped_model_folder,
                                                           "folder no-such-folder does not exist"),
    "CSV without the label column": (
        lambda tmp: run(recipe(data={"source": "csv", "path": str(tmp / "mail.csv"),
                                     "text": {"text_column": "sentence", "tokenizer": str(tmp / "tok")}}),
                        runs_dir=tmp / "runs", progress=False),
        "data.text.label_column: null for unlabelled texts"),
    "model max_length that differs from data.text.max_length": (
        lambda tmp: run(text_recipe(tmp), runs_dir=tmp / "runs", progress=False),
        "teacher.args.max_length: 64 differs from data.text.max_length (16)"),
    "attention heads pruned in a family whose heads kdistill cannot prune": (
        lambda tmp: run(recipe(teacher={"model": "hf", "args": {"path": str(tmp / "mpnet")}},
                               student={"from_teacher": {"layers": 1, "heads": 2}}), runs_dir=tmp / "runs",
                        progress=False), "attention heads of 'mpnet' cannot be pruned"),
    "malformed YAML": (malformed_yaml, "is not valid YAML"),
    "unknown key": (lambda tmp: load_recipe(recipe(stages__0__epocs=3)), "did you mean 'epochs'"),
    "wrong type": (lambda tmp: load_recipe(recipe(stages__0__epochs="three")), "stages.0.epochs"),
    "negative temperature": (lambda tmp: run(recipe(stages__0__loss=[{"loss": "kd", "args": {"temperature": -1}}]),
                                             runs_dir=tmp, progress=False), "temperature must be > 0"),
    "teacher weights summing to zero": (
        lambda tmp: run(recipe(teachers={"t2": {"model": "mlp", "args": {"in_features": 64}}},
                               stages__0__loss=[{"loss": "multi_kd", "teacher": ["logits", "t2:logits"],
                                                 "args": {"weights": [0, 0]}}]), runs_dir=tmp, progress=False),
        "positive sum"),
    "labelled fraction above 1": (lambda tmp: load_recipe(recipe(data={"source": "digits", "labelled": 1.5})),
                                  "between 0 and 1"),
    "missing data directory": (lambda tmp: run(recipe(data={"source": "fashion_mnist", "path": str(tmp / "none")}),
                                               runs_dir=tmp, progress=False), "apt-get install"),
    "tap on a layer that does not exist": (
        lambda tmp: run(recipe(stages__0__loss=[{"loss": "hint", "student": "stages.9", "teacher": "stages.0"}]),
                        runs_dir=tmp, progress=False), "no module named 'stages.9'"),
    "embedding space on a teacher layer that does not exist": (
        lambda tmp: run(recipe(embedding={"teacher": "stages.9", "student": "stages.0", "dim": 4},
                               stages__0__loss=[{"loss": "embed_mse", "student": "stages.0", "teacher": "embedding"}]),
                        runs_dir=tmp, progress=False), "embedding.teacher: no module named 'stages.9'"),
    "a stage started from a model of another shape": (
        lambda tmp: run(recipe(stages=[{"name": "t", "train": "teacher", "data": "full"},
                                       {"name": "s", "init_from": "t", "loss": [{"loss": "kd"}]}]),
                        runs_dir=tmp, progress=False), "do not fit the student"),
    "a loss argument of the wrong type": (
        lambda tmp: load_recipe(recipe(stages__0__loss=[{"loss": "kd", "args": {"temperature": "hot"}}])),
        "temperature='hot'"),
    "shapes no adapter can reconcile": (
        lambda tmp: run(recipe(teacher={"model": "cnn", "args": {"channels": [8], "image_size": 8}},
                               stages__0__loss=[{"loss": "hint", "student": "stages.0", "teacher": "stages.0"}]),
                        runs_dir=tmp, progress=False), "cannot map a student feature"),
    "teacher and student classes differ": (
        lambda tmp: run(recipe(student={"model": "mlp", "args": {"in_features": 64, "num_classes": 5}}),
                        runs_dir=tmp, progress=False), "outputs 10 classes but the student 5"),
    "truncated or corrupt checkpoint": (truncated_checkpoint, "no readable checkpoint"),
    "weights in pickle format": (lambda tmp: run(recipe(teacher={**BASE["teacher"], "weights": str(tmp / "t.pt")}),
                                                 runs_dir=tmp, progress=False), "not a .safetensors file"),
    "NaN or infinite input values": (nan_inputs, "NaN or infinite"),
    "run directory that already exists": (existing_run, "already exists"),
    "binary file as the recipe": (lambda tmp: load_recipe(tmp / "r.yaml"), "is not a text file"),
    "run name that is a path": (lambda tmp: load_recipe(recipe(name="../elsewhere")), "is not a run name"),
    "loss weight of NaN": (lambda tmp: load_recipe(recipe(stages__0__loss=[{"loss": "kd", "weight": float("nan")}])),
                           "stages.0.loss.0.weight: Input should be a finite number"),
    "no labelled samples for a labelled stage": (
        lambda tmp: run(recipe(data={"source": "digits", "labelled": 0}, stages__0__data="labelled"), runs_dir=tmp,
                        progress=False), "holds no samples; set data.labelled above 0"),
    "student input size that does not fit the data": (
        lambda tmp: run(recipe(student={"model": "mlp", "args": {"in_features": 784}}), runs_dir=tmp, progress=False),
        "student: the model fails on the data's inputs of shape (1, 8, 8)"),
    "model argument out of range": (
        lambda tmp: run(recipe(student={"model": "mlp", "args": {"in_features": 64, "dropout": 2.0}}), runs_dir=tmp,
                        progress=False), "model 'mlp': bad arguments"),
    "runs directory that is a file": (lambda tmp: run(BASE, runs_dir=tmp / "runs", progress=False),
                                      "is a file, not a folder"),
    "HF model folder holding a pickle": (
        lambda tmp: run(recipe(teacher={"model": "hf", "args": {"path": str(tmp / "hf")}}), runs_dir=tmp / "runs",
                        progress=False), "which kdistill never loads"),
    "corrupt predictions.safetensors given to kdistill report": (report, "cannot be read"),
    "unknown torch.compile backend": (lambda tmp: load_recipe(recipe(stages__0__compile="nosuch")),
                                      "unknown torch.compile backend 'nosuch'"),
    "data field the source does not read": (
        lambda tmp: load_recipe(recipe(data={"source": "digits", "path": "/data/digits"})), "data.path"),
    "image folder with no images": (
        lambda tmp: run(recipe(data={"source": "image_folder", "path": str(tmp / "photos")}), runs_dir=tmp / "runs",
                        progress=False), "holds no images"),
    "random crop without a crop size": (
        lambda tmp: load_recipe(recipe(data={"source": "image_folder", "path": "p", "images": {"random_crop": True}})),
        "random_crop needs crop"),
    "cached teacher outputs of randomly decoded images": (
        lambda tmp: load_recipe(recipe(data={"source": "image_folder", "path": "p", "images": {"flip": True}},
                                       stages__0__cache={"dir": "c"})), "fixed views"),
    "npy labels of the wrong length": (
        lambda tmp: run(recipe(data={"source": "npy", "path": str(tmp / "x.npy"), "files": {"labels": str(tmp / "y.npy")}}),
                        runs_dir=tmp / "runs", progress=False), "npy"),
    "a language-model source read as classification": (
        lambda tmp: load_recipe(recipe(data={"source": "lm_text"}, task="classify")), "task: generate"),
    "a packing block size given to prompt/response pairs": (
        lambda tmp: load_recipe(recipe(data={"source": "lm_pairs", "path": "p.jsonl", "lm": {"block_size": 64}})),
        "data.lm.block_size applies only to source 'lm_text'"),
    "WordNet's parts of speech given with a corpus file": (
        lambda tmp: load_recipe(recipe(data={"source": "lm_text", "path": "c.txt", "lm": {"pos": "noun"}})),
        "read only when data.path is unset"),
    "language-model text without a tokenizer": (
        lambda tmp: run(recipe(data={"source": "lm_text"}), runs_dir=tmp / "runs", progress=False), "data.lm.tokenizer"),
    "a token loss on a model without an output projection": (
        lambda tmp: run(recipe(stages__0__loss=[{"loss": "token_kd"}]), runs_dir=tmp / "runs", progress=False),
        "output_head"),
    "a cut ranked on data asked of a model that is not a language model": (
        lambda tmp: run(recipe(student={"from_teacher": {"keep": {"stages": [0]}, "pick": "block"}}),
                        runs_dir=tmp / "runs", progress=False), "pick: block"),
    "more labelled samples than labelled rows": (
        lambda tmp: run(recipe(data={"source": "custom", "labelled": 40}),
                        data=((torch.randn(60, 64), torch.tensor([0, 1] * 10 + [-1] * 40)),
                              (torch.randn(10, 64), torch.tensor([0, 1] * 5))), runs_dir=tmp / "runs",
                        progress=False), "labelled"),
    "the best epoch asked for without a validation set": (
        lambda tmp: load_recipe(recipe(stages__0__keep_best=True)), "set data.val"),
    "static student wider than its teacher": (
        lambda tmp: static_run(tmp, {"width": 64}),
        "student.args.width: 64 is wider than the teacher's embeddings (32)"),
    "static student without a teacher": (
        lambda tmp: static_run(tmp, teacher=False),
        "built from the teacher's vocabulary, but the recipe has no teacher"),
    "narrow static student compared with the teacher's own output": (
        lambda tmp: static_run(tmp, {"width": 8}), "teacher: projected"),
    # integrity of what kdistill reads back (issue 29): the cache folder, checkpoints, a resumed recipe
    "recipe.yaml edited before --resume": (
        lambda tmp: run(None, resume=tmp / "runs" / "bad.incomplete", progress=False),
        "recipe.yaml was edited since the run started (stages.0.epochs 3 -> 2); restore it"),
    "every checkpoint changed after it was written": (
        lambda tmp: quietly(run, None, resume=tmp / "runs" / "bad.incomplete", progress=False),
        "holds no readable checkpoint"),
    "cache.dir that cannot be written": (
        lambda tmp: run(recipe(stages__0__cache={"dir": str(tmp / "file" / "cache")}), runs_dir=tmp / "runs",
                        progress=False), "stages (distil): cache.dir: cannot write the teacher's outputs into"),
    # labels and class names (data/labels.py: one rule for every source; data.classes; recorded names)
    "a label that is not a class id (NaN, inf, a fraction)": (
        lambda tmp: run(recipe(data={"source": "custom", "labelled": 20}), runs_dir=tmp / "runs", progress=False,
                        data=((torch.randn(60, 64), torch.tensor([0.0, 1.0, float("nan")] * 20)),
                              (torch.randn(10, 64), torch.tensor([0, 1] * 5)))),
        "data (training set): label nan at sample 2 is not a class id"),
    "a class id far beyond the data's classes": (
        lambda tmp: run(recipe(data={"source": "custom", "labelled": 20}), runs_dir=tmp / "runs", progress=False,
                        data=((torch.randn(60, 64), torch.tensor([0, 1] * 29 + [0, 10**9])),
                              (torch.randn(10, 64), torch.tensor([0, 1] * 5)))),
        "label 1000000000 at sample 59 is far beyond the data's 3 distinct label(s)"),
    "a class name among integer labels in an image list": (
        lambda tmp: run(recipe(data={"source": "image_folder", "path": str(tmp / "photos.csv")}),
                        runs_dir=tmp / "runs", progress=False), "label 'cat' at row 3 mixes class names and integer ids"),
    "an empty class folder": (
        lambda tmp: run(recipe(data={"source": "image_folder", "path": str(tmp / "photos")}), runs_dir=tmp / "runs",
                        progress=False), "photos/empty holds no images"),
    "a class folder that data.classes lacks": (
        lambda tmp: run(recipe(data={"source": "image_folder", "path": str(tmp / "photos"),
                                     "classes": ["Bag", "Coat"]}), runs_dir=tmp / "runs", progress=False),
        "has class folder 'bag', not one of the classes [Bag, Coat] (its folders: [bag, coat])"),
    "data.classes naming fewer classes than the labels": (
        lambda tmp: run(recipe(data={"source": "digits", "labelled": 100, "classes": ["zero", "one"]}),
                        runs_dir=tmp / "runs", progress=False),
        "data.classes: names 2 classes but a training label is 9"),
    "a teacher whose weights record other class names": (
        lambda tmp: run(recipe(data={"source": "digits", "labelled": 100, "classes": [str(i) for i in range(10)]},
                               teacher__weights=str(tmp / "teacher.safetensors")), runs_dir=tmp / "runs",
                        progress=False),
        "the teacher was trained on other classes, in another order"),
    # data that means something else (kdistill issue 29: scaling, teacher check, image size, unreadable files)
    "teacher from weights that scores near chance": (
        lambda tmp: run(recipe(teacher={**BASE["teacher"], "weights": str(tmp / "random.safetensors")}),
                        runs_dir=tmp, progress=False), "near chance"),
    "image size that is neither a side nor [height, width]": (
        lambda tmp: load_recipe(photo_recipe(tmp, size=[8, 8, 3])), "data.images.size: [8, 8, 3] is neither"),
    "unreadable image file in a run": (
        lambda tmp: run(photo_recipe(tmp, test=3), runs_dir=tmp / "runs", progress=False), "kdistill check-data"),
    "kdistill check-data on a folder with unreadable files": (check_data, "check-data: 3 of 11 samples cannot be read"),
    # ownership of the paths kdistill writes (run names, the lock on a name, links, user files)
    "run name with a control character": (lambda tmp: load_recipe(recipe(name="two\nlines")), "control character"),
    "run name of bytes that are not UTF-8": (lambda tmp: load_recipe(recipe(name="\udcff")), "not UTF-8"),
    "second run of a name while the first runs": (lambda tmp: run_while_another_holds_the_name(tmp),
                                                  "is in use by another kdistill run (pid"),
    "metrics.jsonl linked to a file elsewhere, on --resume": (
        lambda tmp: run(None, resume=tmp / "runs" / "bad.incomplete", progress=False), "is a symbolic link"),
    "report.md linked to a file elsewhere": (report, "is a symbolic link"),
    "kdistill report on a folder kdistill did not write": (report, "was not written by kdistill"),
    "report --out over an earlier comparison": (
        lambda tmp: report(tmp, str(tmp / "runs" / "bad"), "--out", str(tmp / "cmp")),
        "exists; choose another --out, or pass --overwrite"),
    "export over the user's student.json": (lambda tmp: export_over_user_file(tmp), "student.json exists"),
    # input size limits (issue 29): refused before they are read whole, walked or echoed
    "a recipe file over the size limit": (lambda tmp: load_recipe(tmp / "big.yaml"),
                                          "bytes, over the 1,048,576 a recipe may have"),
    "a YAML alias bomb in the recipe": (lambda tmp: load_recipe(tmp / "bomb.yaml"), "holds more than 5,000 values"),
    "a YAML alias inside the block it names": (lambda tmp: load_recipe(tmp / "cycle.yaml"),
                                               "the alias *a is inside the block it names"),
    "a recipe holding a huge list": (lambda tmp: run(recipe(zzz=list(range(10**6))), runs_dir=tmp, progress=False),
                                     "recipe: holds more than 5,000 values"),
    "an override over the size limit": (lambda tmp: run(BASE, ["name=" + "x" * 20_000], runs_dir=tmp, progress=False),
                                        "20,005 characters, over the 10,000 an override may have"),
    "a huge value echoed in an error": (lambda tmp: load_recipe(recipe(seed="9" * 10**6)), "(got '" + "9" * 76 + "...)"),
}


def interrupted(tmp):
    """runs/bad.incomplete: BASE for 3 epochs, stopped in its second with checkpoints."""
    from fixtures import interrupted_run

    return interrupted_run(recipe(stages__0__epochs=3, checkpoint={"every": 5}), tmp / "runs")


def edited_recipe(tmp):
    written = interrupted(tmp) / "recipe.yaml"
    written.write_text(written.read_text(encoding="utf8").replace("epochs: 3", "epochs: 2"), encoding="utf8")


def changed_checkpoints(tmp):
    for path in (interrupted(tmp) / "checkpoints").glob("ckpt-*.pt"):
        raw = path.read_bytes()
        path.write_bytes(raw[:-30] + bytes(30))  # the same size, its end zeroed


def quietly(action, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checkpoints skipped, one warning each
        return action(*args, **kwargs)


SETUP.update({"recipe.yaml edited before --resume": edited_recipe,
              "every checkpoint changed after it was written": changed_checkpoints,
              "cache.dir that cannot be written": lambda tmp: (tmp / "file").write_text("in the way", encoding="utf8")})



def _labelled_photos(tmp, folders=("bag", "coat"), listed=None):
    """photos/<folder>/ with two tiny JPEGs each, or a photos.csv list of them labelled ``listed``."""
    from PIL import Image

    for folder in folders:
        for i in range(2):
            (tmp / "photos" / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (6, 6), (40 * i, 80, 120)).save(tmp / "photos" / folder / f"{i}.jpg", "JPEG")
    if listed is not None:
        rows = [f"photos/{f}/{i}.jpg" for f in folders for i in range(2)]
        (tmp / "photos.csv").write_text("path,label\n" + "".join(f"{r},{y}\n" for r, y in zip(rows, listed)),
                                        encoding="utf8")


def _teacher_with_reversed_names(tmp):
    from kdistill.data.weights_meta import classes_metadata
    from kdistill.models.weights import save_weights
    from kdistill.models.zoo import build_model

    teacher = build_model("mlp", in_features=64, hidden=[16], num_classes=10)
    save_weights(teacher, tmp / "teacher.safetensors", classes_metadata([str(i) for i in reversed(range(10))]))


SETUP.update({
    "a class name among integer labels in an image list": lambda tmp: _labelled_photos(tmp, listed=[0, 1, "cat", 1]),
    "an empty class folder": lambda tmp: (_labelled_photos(tmp), (tmp / "photos" / "empty").mkdir()),
    "a class folder that data.classes lacks": _labelled_photos,
    "a teacher whose weights record other class names": _teacher_with_reversed_names,
})



def finished_run(tmp):
    return run(BASE, runs_dir=tmp / "runs", progress=False).run_dir


def run_kept_by_a_full_disk(tmp):
    import errno

    import kdistill.runner as runner

    def full(run_dir, summary=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "report.md"))

    real, runner.write_report = runner.write_report, full
    try:
        with pytest.raises(KDistillError, match="No space left"):
            run(BASE, runs_dir=tmp / "runs", progress=False)
    finally:
        runner.write_report = real
    return tmp / "runs" / "bad.incomplete"


def link_elsewhere(path: Path, outside: Path) -> None:
    outside.write_text("precious")
    path.unlink()
    path.symlink_to(outside)


def run_while_another_holds_the_name(tmp):
    import fcntl
    import os

    from kdistill.rundir import MARKER

    fd = os.open(tmp / "runs" / "bad.incomplete" / MARKER, os.O_RDONLY)  # as another process holds it
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        run(BASE, runs_dir=tmp / "runs", overwrite=True, progress=False)
    finally:
        os.close(fd)


def export_over_user_file(tmp):
    from kdistill.rebuild import export_run

    export_run(tmp / "runs" / "bad", "safetensors", tmp / "out")


def comparison_there(tmp):
    finished_run(tmp)
    (tmp / "cmp").mkdir()
    (tmp / "cmp" / "report.md").write_text("my notes")


def user_student_json(tmp):
    finished_run(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "student.json").write_text("my notes")


def unmarked_run(tmp):
    from kdistill.rundir import MARKER

    (finished_run(tmp) / MARKER).unlink()


SETUP.update({
    "second run of a name while the first runs": lambda tmp: run_kept_by_a_full_disk(tmp),
    "metrics.jsonl linked to a file elsewhere, on --resume": lambda tmp: link_elsewhere(
        run_kept_by_a_full_disk(tmp) / "metrics.jsonl", tmp / "outside.txt"),
    "report.md linked to a file elsewhere": lambda tmp: link_elsewhere(finished_run(tmp) / "report.md",
                                                                       tmp / "outside.md"),
    "kdistill report on a folder kdistill did not write": unmarked_run,
    "report --out over an earlier comparison": comparison_there,
    "export over the user's student.json": user_student_json,
})



def write_size_limit_recipes(tmp):
    (tmp / "big.yaml").write_text("name: " + "x" * (1 << 20) + "\n", encoding="utf8")
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                        for i in range(1, 9)]
    (tmp / "bomb.yaml").write_text("\n".join(levels) + "\nstages: [{name: s}]\n", encoding="utf8")
    (tmp / "cycle.yaml").write_text("name: &a [*a]\nstages: [{name: s}]\n", encoding="utf8")


SETUP.update({case: write_size_limit_recipes for case in ("a recipe file over the size limit",
                                                          "a YAML alias bomb in the recipe",
                                                          "a YAML alias inside the block it names")})


def message(case: str, tmp: Path) -> str:
    action, _ = CASES[case]
    SETUP.get(case, lambda tmp: None)(tmp)
    with pytest.raises(KDistillError) as err:
        action(tmp)
    return str(err.value)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_writes_nothing(case, tmp_path):
    SETUP.get(case, lambda tmp: None)(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    action, expected = CASES[case]
    with pytest.raises(KDistillError) as err:
        action(tmp_path)
    assert expected in str(err.value) and "\n" not in str(err.value).strip()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing changed


if __name__ == "__main__":  # the docs table
    import tempfile

    print("| bad input | message |\n|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            text = message(case, Path(tmp)).replace(tmp, "/tmp/x").replace("|", "/").replace("`", "'")
            print(f"| {case} | `{text}` |")
