"""The recipe: a validated schema, YAML loading and ``key.sub=value`` overrides.

Only this module and the entry points read the recipe tree; everything downstream takes
plain keyword arguments.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdistill.errors import KDistillError, cut, shown
from kdistill.losses.registry import build_loss, check_loss_name, contract_of
from kdistill.paths import check_run_name, user_path


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN weight fails here, not at step 1


Amount = Union[int, float]  # a count (600) or a fraction of the training set (0.01)


TEXT_SOURCES = ("wordnet", "text", "csv")


class TextSpec(Strict):
    """Text sources: which texts, how they are held out and tokenised."""

    pos: str | list[str] = "noun"  # wordnet: noun, verb, adj, adv or all
    examples: bool = True  # wordnet: the glosses' quoted example sentences too
    text_column: str = "text"  # csv
    label_column: str | None = "label"  # csv; null for unlabelled text
    test: Amount = 0.1  # texts held out as the test set (a count or a fraction)
    tokenizer: str | None = None  # a folder or model id; default the teacher's (args.path)
    # tokens kept of each text, special tokens included: the run's one length, for training,
    # evaluation and the exported student_hf/ alike (its encoders take it in place of their own
    # args.max_length, which may be left out; set to another value, it is refused)
    max_length: int = Field(128, ge=2)


# text fields that only some text sources read
TEXT_ONLY_FOR = {"pos": ("wordnet",), "examples": ("wordnet",), "text_column": ("csv",), "label_column": ("csv",)}


def _changed(spec: BaseModel) -> list[str]:
    """The fields of ``spec`` the user set to something other than their default."""
    fields = type(spec).model_fields
    return [name for name in fields if name in spec.model_fields_set and getattr(spec, name) != fields[name].default]


FILE_SOURCES = ("image_folder", "hf_dataset", "npy")  # read from files, sample by sample
IMAGE_SOURCES = ("image_folder", "hf_dataset")


class ImageSpec(Strict):
    """How image files are decoded (image_folder, and hf_dataset's image column), in the workers.

    Evaluation and teacher outputs see the plain view: resize, then centre crop. A training batch
    may instead draw a random resized crop and a flip, seeded by (seed, epoch, sample).
    """

    mode: Literal["rgb", "grayscale"] = "rgb"  # 3 channels, or 1
    # an int: resize the shorter side to it (aspect kept); [height, width]: resize to exactly
    # that (aspect not kept, squashed); default: as stored
    size: int | tuple[int, int] | None = None
    crop: int | None = Field(None, ge=1)  # centre crop (crop x crop) after resizing; default: no crop
    random_crop: bool = False  # training batches: a random resized crop to crop x crop (needs crop)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random_crop: the area fraction of the image kept
    flip: bool = False  # training batches: a horizontal flip, half of the time
    # decode every file once when the data is loaded and leave out those that cannot be read
    # (one warning line; the list goes to the run's skipped_files.txt); false: an unreadable
    # file stops the run (kdistill check-data RECIPE lists them all at once)
    skip_unreadable: bool = False

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value):
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            return tuple(value)
        raise ValueError(f"{str(value)[:40]} is neither a side in pixels (an int >= 1: the shorter side, aspect "
                         "kept) nor [height, width] (two ints >= 1: resized to exactly that)")

    @model_validator(mode="after")
    def _crop_given(self) -> "ImageSpec":
        if self.random_crop and self.crop is None:
            raise ValueError("random_crop needs crop (the output size in pixels)")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {list(self.crop_scale)} must be two fractions 0 < low <= high <= 1")
        return self


class FilesSpec(Strict):
    """Sources read from files (image_folder, hf_dataset, npy): the test set, labels and columns."""

    test_path: str | None = None  # the test set's folder / list / file; default: path's test part, else held out
    test: Amount = 0.1  # held out of the training data as the test set when there is no test part
    labels: str | None = None  # npy: a .npy file of integer labels (-1: unlabelled); default: all unlabelled
    test_labels: str | None = None  # npy: the test set's labels (with test_path)
    image_column: str = "image"  # hf_dataset: images (or arrays)
    label_column: str | None = "label"  # hf_dataset, and image_folder's CSV/JSONL lists; null: unlabelled
    path_column: str = "path"  # image_folder's CSV/JSONL lists: the image file, relative to the list
    train_split: str = "train"  # hf_dataset saved as a DatasetDict: the splits' names
    test_split: str = "test"


LM_SOURCES = ("lm_text", "lm_pairs")  # token sequences for causal language models (task: generate)


class LMSpec(Strict):
    """Text for causal language models: a corpus packed into blocks (lm_text) or prompt/response
    pairs (lm_pairs). ``data.path``: a text file (one text a line), a CSV or JSONL file, a Hugging
    Face dataset (a save_to_disk folder or parquet / Arrow files); none: WordNet's glosses."""

    tokenizer: str | None = None  # a folder or model id; default the teacher's (args.path)
    block_size: int = Field(128, ge=2)  # lm_text: tokens a block (texts joined by the eos token, then cut)
    max_length: int = Field(256, ge=2)  # lm_pairs: tokens a pair at most (prompt + response), longer ones cut
    text_column: str = "text"  # lm_text: the column of a CSV / JSONL / dataset
    prompt_column: str = "prompt"  # lm_pairs
    response_column: str = "response"  # lm_pairs
    chat_template: bool = True  # lm_pairs: wrap the prompt in the tokenizer's chat template when it has one
    test: Amount = 0.05  # texts (or pairs) held out for evaluation: a count or a fraction
    pos: str | list[str] = "all"  # WordNet (no data.path): which parts of speech
    examples: bool = True  # WordNet: the glosses' quoted example sentences too

    # the fields one source reads and the other ignores: set for the other, they are refused
    READ_BY: ClassVar[dict[str, str]] = {"block_size": "lm_text", "text_column": "lm_text", "max_length": "lm_pairs",
               "prompt_column": "lm_pairs", "response_column": "lm_pairs", "chat_template": "lm_pairs"}


class LoaderSpec(Strict):
    """How a stage's batches are fetched: in the main process (0 workers) or by DataLoader workers."""

    workers: int = Field(0, ge=0, le=256)  # worker processes; 0: the main process fetches
    prefetch: int = Field(2, ge=1, le=64)  # batches each worker keeps ready
    # how much lower the workers' scheduling priority is than the training process's (Unix nice,
    # 0: the same): decoding takes the CPU time the training step leaves rather than preempting
    # its threads (on few cores, where workers and training compete for them)
    nice: int = Field(10, ge=0, le=19)


class DataSpec(Strict):
    source: Literal["fashion_mnist", "digits", "custom", "wordnet", "text", "csv",
                    "image_folder", "hf_dataset", "npy", "lm_text", "lm_pairs"] = "fashion_mnist"
    # IDX folder (MNIST's work the same), WordNet folder, text or CSV file; image_folder: a folder
    # of class subfolders or a CSV/JSONL list; hf_dataset: a save_to_disk folder or parquet / JSON /
    # CSV / Arrow files; npy: an (N, ...) .npy array
    path: str | None = None
    text: TextSpec = Field(default_factory=TextSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)
    files: FilesSpec = Field(default_factory=FilesSpec)
    lm: LMSpec = Field(default_factory=LMSpec)
    labelled: Amount = 600
    val: Amount = 0  # held out of training to judge epochs (keep_best); token blocks: drawn from all
    transfer: Amount | None = None
    # auto: the teacher's recorded preprocessing if its weights record one, else statistics of
    # the training data when this run trains the teacher (or there is none and the source is
    # built in), else none; teacher: the teacher's recorded one; data: the training data's
    # per-channel mean and std (true); none: the inputs as they are (false)
    normalize: Literal["auto", "teacher", "data", "none"] = "auto"
    split_seed: int | None = None  # default: the recipe's seed
    # a teacher loaded from weights (weights, or a pretrained args.path) that scores near chance
    # on the labelled test inputs, or far below the test accuracy its weights record, stops the
    # run before training (its inputs likely differ from those it was trained on); false: go on
    check_teacher: bool = True
    loader: LoaderSpec = Field(default_factory=LoaderSpec)
    # the class names in the order of the model's outputs: a class folder, a name in a label
    # column or a ClassLabel name maps to its index here (default: the names sorted); integer
    # labels are indices into it. A name in the data missing here is refused, and so is a
    # teacher.weights recording other names (kdistill records them in the weights it writes)
    classes: list[str] | None = None

    @field_validator("labelled", "val", "transfer")
    @classmethod
    def _amount(cls, value):
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError("a fraction must be between 0 and 1; for a count give an integer")
        if isinstance(value, int) and value < 0:
            raise ValueError("a count must be 0 or more")
        return value

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value, info):
        if value is None:
            return value
        if info.data.get("source") in LM_SOURCES:
            raise ValueError(f"does not apply to source {shown(info.data.get('source'))}, whose token sequences have "
                             "no classes; drop data.classes")
        names = [name.strip() for name in value]
        if not names or any(not name for name in names):
            raise ValueError("give the class names, none empty: [cat, dog, ...]")
        seen: set[str] = set()
        twice = sorted({name for name in names if name in seen or seen.add(name)})
        if twice:
            raise ValueError(f"names {', '.join(twice)[:60]} more than once; give each class once")
        return names

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize_bool(cls, value):
        return {True: "data", False: "none"}.get(value, value) if isinstance(value, bool) else value

    # fields the user set that the source does not read are errors, not silently ignored; these
    # run only on fields the recipe gives (a dumped recipe gives every field at its default)
    @field_validator("path")
    @classmethod
    def _path_applies(cls, value, info):
        source = info.data.get("source")
        if value is not None and source in ("digits", "custom"):
            why = ("ships with scikit-learn" if source == "digits"
                   else "is passed from Python (run(recipe, data=(train, test)))")
            raise ValueError(f"does not apply to source {shown(source)}, whose data {why}; drop data.path")
        return value

    @field_validator("text")
    @classmethod
    def _text_applies(cls, value: TextSpec, info):
        source = info.data.get("source")
        for name in _changed(value):
            if source not in TEXT_SOURCES:
                raise ValueError(f"{name} applies only to the text sources ({', '.join(TEXT_SOURCES)}), "
                                 f"not {shown(source)}; drop data.text.{name}")
            readers = TEXT_ONLY_FOR.get(name, TEXT_SOURCES)
            if source not in readers:
                raise ValueError(f"{name} is read only by source {' and '.join(readers)}, not {shown(source)}; "
                                 f"drop data.text.{name}")
        return value

    @field_validator("images", "files", "lm")
    @classmethod
    def _section_applies(cls, value: BaseModel, info):
        source = info.data.get("source")
        readers, what = {"images": (IMAGE_SOURCES, "image file"), "files": (FILE_SOURCES, "file"),
                         "lm": (LM_SOURCES, "language-model")}[info.field_name]
        changed = _changed(value)
        if changed and source not in readers:
            raise ValueError(f"{changed[0]} applies only to the {what} sources ({', '.join(readers)}), "
                             f"not {shown(source)}; drop data.{info.field_name}.{changed[0]}")
        return value

    @model_validator(mode="after")
    def _lm_fields_read(self) -> "DataSpec":
        """A data.lm field the source does not read is a mistake, not a no-op (e.g. block_size on pairs)."""
        if self.source not in LM_SOURCES:
            return self
        for name in _changed(self.lm):
            reader = LMSpec.READ_BY.get(name)
            if reader not in (None, self.source):
                raise ValueError(f"data.lm.{name} applies only to source {shown(reader)}, not {shown(self.source)}; "
                                 f"drop data.lm.{name}")
            if name in ("pos", "examples") and self.path is not None:
                raise ValueError(f"data.lm.{name} chooses WordNet's texts, read only when data.path is unset; "
                                 f"drop data.lm.{name}")
        return self

    @model_validator(mode="after")
    def _no_labels_for_language_models(self) -> "DataSpec":
        """Token sequences carry no class labels: nothing is held out as a labelled set."""
        if self.source in LM_SOURCES:
            if "labelled" in self.model_fields_set and self.labelled:
                raise ValueError(f"labelled applies to class labels, which source {shown(self.source)} has none of; "
                                 "drop data.labelled (the held-out texts are data.lm.test)")
            self.labelled = 0
        return self

    @model_validator(mode="after")
    def _path_needed(self) -> "DataSpec":
        if self.source in FILE_SOURCES and self.path is None:
            raise ValueError(f"source {shown(self.source)} reads files: set data.path")
        return self

    @field_validator("normalize")
    @classmethod
    def _normalize_applies(cls, value, info):
        source = info.data.get("source")
        if source in (*TEXT_SOURCES, *LM_SOURCES) and value in ("teacher", "data"):
            raise ValueError(f"{shown(value)} does not apply to source {shown(source)}, whose inputs are token ids; "
                             "drop data.normalize")
        return value


class SubnetSpec(Strict):
    """A student cut from the teacher: chosen blocks, started from the teacher's weights."""

    keep: list[int] | dict[str, list[int]] | None = None  # indices of the teacher's layers, or {stack: indices}
    layers: int | None = Field(None, ge=1)  # or: how many of a transformer's layers to keep ...
    # ... and which; block: drop the contiguous block of layers whose removal changes a causal
    # language model's predictions least on a calibration batch (Minitron's depth pruning)
    pick: Literal["even", "first_last", "first", "block"] = "even"
    heads: int | None = Field(None, ge=1)  # attention heads kept in every layer (transformers)
    ffn: int | None = Field(None, ge=1)  # feed-forward width kept in every layer (transformers)

    @model_validator(mode="after")
    def _one_choice(self) -> "SubnetSpec":
        if (self.keep is None) == (self.layers is None):
            raise ValueError("from_teacher: give exactly one of keep (indices) and layers (a count)")
        return self


class ModelSpec(Strict):
    model: str | None = None  # a registered name (cnn, resnet, mlp, hf) or 'package.module:callable'
    args: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # a .safetensors file
    from_teacher: SubnetSpec | None = None  # student only: a sub-network of the teacher, in place of model

    @model_validator(mode="after")
    def _model_or_subnet(self) -> "ModelSpec":
        if (self.model is None) == (self.from_teacher is None):
            raise ValueError("give exactly one of model (a name) and from_teacher (a sub-network of the teacher)")
        return self


class TermSpec(Strict):
    loss: str
    weight: float = 1.0
    # a module path, 'logits' (the default) or 'weights'; a list feeds the loss several taps
    student: str | list[str] | None = None
    teacher: str | list[str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None  # logged name, default the loss name

    @field_validator("loss")
    @classmethod
    def _known(cls, value: str) -> str:
        return check_loss_name(value)

    @model_validator(mode="after")
    def _constructs(self) -> "TermSpec":
        """The loss is built once here, so a bad argument fails before any data loads."""
        try:
            build_loss(self.loss, **self.args)
        except KDistillError as err:
            raise ValueError(str(err)) from None
        return self


class EmbeddingSpec(Strict):
    """Shallow distillation: the teacher feature 'embedding' is a PCA of a teacher tap."""

    teacher: str  # the teacher tap the space is drawn from
    student: str  # the student tap whose adapted output is the student's embedding
    dim: int = Field(32, ge=1)
    method: Literal["pca"] = "pca"
    max_samples: int = Field(10000, ge=2)  # training inputs the PCA is fitted on (no labels read)
    shots: list[int] = Field(default_factory=lambda: [1, 5, 10, 50])  # labels a class in the report


class OptimizerSpec(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # weight decay on biases and normalisation layers' weights too (false: on every other parameter,
    # as the Hugging Face Trainer does; train/optim.no_decay_params)
    decay_bias_and_norm: bool = False


class ScheduleSpec(Strict):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10  # epochs, for 'step'
    gamma: float = 0.1  # for 'step'


class AugmentSpec(Strict):
    shift: int = 0  # random translation, pixels
    flip: bool = False  # random horizontal flip


class CacheSpec(Strict):
    """Teacher outputs on disk, built once (or by ``kdistill cache``) and memory-mapped."""

    dir: str = ".kdistill/cache"  # caches are folders under it, named by teacher, data and augmentation
    views: int = Field(1, ge=1)  # augmented views of every sample (with augment); training draws among them
    topk: int | None = Field(None, ge=1)  # keep only the k largest logits (see kdistill/train/cache.py)
    dtype: Literal["float16", "float32"] = "float16"


class StageSpec(Strict):
    name: str
    train: Literal["student", "teacher", "baseline"] = "student"
    data: Literal["labelled", "transfer", "labelled+transfer", "full"] = "labelled"
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    grad_clip: float | None = 5.0
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    amp: Literal[False, "bf16", "fp16"] = False  # autocast: bf16 on CUDA and the CPU; fp16 on CUDA only (ignored on CPU)
    # micro-batches each batch is split into, their gradients added up before one update: the
    # activations of batch_size / accumulate samples at a time (losses comparing the samples of a
    # batch, and batch norm, see one micro-batch)
    accumulate: int = Field(1, ge=1)
    loss: list[TermSpec] = Field(default_factory=lambda: [TermSpec(loss="ce")], min_length=1)
    init_from: str | None = None  # start from the weights another stage ended with
    cache_teacher: bool = True  # teacher outputs computed once, in memory, when there is no augmentation
    cache: CacheSpec | None = None  # or on disk, with augmented views
    channels_last: bool = False  # NHWC layout for image batches (GPU convolutions)
    compile: bool | str = False  # torch.compile the student: true (inductor) or a backend name
    eval_every: int = Field(1, ge=1)  # evaluate every N epochs (and always after the last)
    # end the stage on the weights of its best evaluated epoch, judged on the validation set
    # (data.val; the family's score: accuracy, cosine to the teacher, perplexity), not the last
    keep_best: bool = False

    @field_validator("loss")
    @classmethod
    def _some_weight(cls, terms: list[TermSpec]) -> list[TermSpec]:
        if all(term.weight == 0 for term in terms):  # nothing to train on: the step has no loss to follow
            raise ValueError("every loss term has weight 0, so the stage would train on nothing; give a term a "
                             "weight other than 0, or drop the stage")
        return terms

    @field_validator("compile")
    @classmethod
    def _backend(cls, value: bool | str) -> bool | str:
        if isinstance(value, str):
            from torch._dynamo import list_backends

            if value not in list_backends(exclude_tags=()):  # debugging backends too, but not named below
                raise ValueError(f"unknown torch.compile backend {shown(value)}; use true (inductor) or one of "
                                 f"{', '.join(list_backends())}")
        return value


class CheckpointSpec(Strict):
    """Checkpoints in the run directory, to resume a run that stopped (kdistill run --resume)."""

    enabled: bool = True
    every: int = Field(0, ge=0)  # also every N optimisation steps (0: at the end of every epoch only)
    keep: int = Field(2, ge=1)  # the newest kept; an unreadable one falls back to the one before


class Recipe(Strict):
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    threads: int | None = Field(None, ge=1, le=1024)  # CPU threads for torch; default: torch's choice
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: ModelSpec | None = None
    teachers: dict[str, ModelSpec] = Field(default_factory=dict)  # extra frozen teachers, tapped as 'name:path'
    student: ModelSpec | None = None  # may be left out when the run trains only a teacher
    stages: list[StageSpec] = Field(min_length=1)
    embedding: EmbeddingSpec | None = None
    latency: bool = True  # measure CPU latency in the final evaluation
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    tensorboard: bool = False  # also log metrics to runs/<name>/tensorboard (pip install tensorboard)
    # classify: models output class logits; embed: sentence-embedding models, judged by
    # agreement with the teacher and few-label accuracy. Default: embed for text sources.
    # generate: causal language models (data.source lm_text / lm_pairs), judged by perplexity,
    # agreement with the teacher and generation speed. Any family in families.FAMILIES (checked
    # where the run looks it up: families.family_of).
    task: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_run_name(value)
        except KDistillError as err:  # pydantic reports ValueErrors with the field's path
            raise ValueError(str(err).removeprefix("name: ")) from None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "mps") and not value.startswith("cuda"):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    def trains(self, role: str) -> bool:
        """Whether a stage trains ``role`` (teacher, student or baseline)."""
        return any(s.train == role for s in self.stages)

    @model_validator(mode="after")
    def _cache_sees_fixed_views(self) -> "Recipe":
        """A disk cache holds the teacher's outputs of fixed views: not of images decoded at random."""
        images = self.data.images
        random = self.data.source in IMAGE_SOURCES and (images.random_crop or images.flip)
        for i, stage in enumerate(self.stages):
            if stage.cache is not None and random:
                raise ValueError(f"stages.{i}.cache: the cache stores the teacher's outputs of fixed views, but "
                                 "data.images decodes a new random view every epoch (random_crop / flip); turn those "
                                 "off for a cached stage (use the stage's augment shift/flip, cached by views), "
                                 "or drop cache")
        return self

    @model_validator(mode="after")
    def _stages_consistent(self) -> "Recipe":
        if self.task is None:
            self.task = ("embed" if self.data.source in TEXT_SOURCES else "generate" if self.data.source in LM_SOURCES
                         else "classify")
        if (self.task == "generate") != (self.data.source in LM_SOURCES):
            raise ValueError(f"task {shown(self.task)} does not fit data.source {shown(self.data.source)}: causal language "
                             f"models (task: generate) read token sequences ({', '.join(LM_SOURCES)}), and only they do")
        for role, spec in (("teacher", self.teacher), *((f"teachers.{n}", t) for n, t in self.teachers.items())):
            if spec is not None and spec.from_teacher is not None:
                raise ValueError(f"{role}.from_teacher: only a student can be cut from the teacher")
        if self.student is not None and self.student.from_teacher is not None and self.teacher is None:
            raise ValueError("student.from_teacher: needs a teacher to cut the student from")
        names = [s.name for s in self.stages]
        for extra in self.teachers:
            if not extra.isidentifier():
                raise ValueError(f"teachers: name {shown(extra)} must be a plain identifier (letters, digits, _)")
        if self.teachers and (self.teacher is None or self.trains("teacher")):
            raise ValueError("teachers: extra teachers need a main 'teacher' and no stage that trains it")
        for i, stage in enumerate(self.stages):
            if names.count(stage.name) > 1:
                raise ValueError(f"stage name {shown(stage.name)} is used twice; stage names must be unique")
            if stage.init_from is not None and stage.init_from not in names[:i]:
                raise ValueError(
                    f"stages.{i}.init_from: {shown(stage.init_from)} is not an earlier stage "
                    f"(earlier: {shown(names[:i], 200)})"
                )
            needs_teacher = stage.train != "teacher" and any(
                contract_of(t.loss).teacher for t in stage.loss
            )
            if needs_teacher and self.teacher is None:
                raise ValueError(f"stages.{i} ({stage.name}) uses a teacher loss but no teacher is set")
            if stage.data == "full" and stage.train != "teacher":
                raise ValueError(
                    f"stages.{i}.data: 'full' uses the transfer set's labels and is only for "
                    "train: teacher; use labelled, transfer or labelled+transfer"
                )
            self._check_options(i, stage)
            if stage.train == "teacher" and self.teacher is None:
                raise ValueError(f"stages.{i} ({stage.name}) trains the teacher but no teacher is set")
            for t in stage.loss:
                start = t.args.get("start", "stage") if contract_of(t.loss).start else "stage"
                if start not in ("init", "stage", *names[:i]):
                    raise ValueError(
                        f"stages.{i}.loss: {t.loss} start {shown(start)} must be init, stage or an "
                        f"earlier stage ({shown(names[:i], 200)})"
                    )
            for t in stage.loss:
                if "embedding" in (t.student, t.teacher) or t.student == "prototypes":
                    if self.embedding is None:
                        raise ValueError(
                            f"stages.{i}.loss: {t.loss} reads the embedding space but the recipe "
                            "has no 'embedding' section (teacher tap, student tap, dim)"
                        )
            term_names = [t.name or t.loss for t in stage.loss]
            if len(set(term_names)) != len(term_names):
                raise ValueError(f"stages.{i}.loss: two terms share a name; give them distinct 'name's")
        return self

    def _check_options(self, i: int, stage: StageSpec) -> None:
        """A stage option that needs something else of the recipe."""
        if stage.cache is not None and stage.cache.views > 1 and not (stage.augment.shift or stage.augment.flip):
            raise ValueError(f"stages.{i}.cache.views: {stage.cache.views} views need augment (shift or flip); "
                             "without augmentation use views: 1")
        if stage.keep_best and not self.data.val:
            raise ValueError(f"stages.{i}.keep_best: the best epoch is chosen on the validation set, and "
                             "data.val is 0; set data.val (a count or a fraction), so the test set stays unseen")


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        for a in list(candidates):
            candidates += list(getattr(a, "__args__", ()) or ())
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(current.model_fields) if current is not None else []


def _format_error(err: ValidationError) -> str:
    # a misspelt key also makes its correct spelling "missing": report the misspelling
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    raw = tuple(first["loc"])
    # pydantic adds the union member it tried ("list[int]", "function-after[...]") to the path;
    # the last part of an unknown key's path is the user's own key, whatever it holds
    keep_last = first["type"] == "extra_forbidden" and raw
    loc = tuple(p for p in raw[:-1 if keep_last else None] if not (isinstance(p, str) and "[" in p))
    loc += raw[-1:] if keep_last else ()
    where = ".".join(cut(str(p)) for p in loc) or "recipe"  # keys shortened too
    if first["type"] == "extra_forbidden":  # the key is named; its value, however big, is not looked at
        valid = _valid_keys(Recipe, loc[:-1])
        key = str(loc[-1])
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5) if len(key) <= 100 else []
        fix = f"did you mean {shown(close[0])}?" if close else f"valid keys: {', '.join(valid)}"
        return f"recipe: unknown key {shown(where)}; {fix}"
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {shown(first['input'])})" if first["type"] not in ("missing",) and "input" in first and not isinstance(first["input"], dict) else ""
    return f"recipe: {where}: {message}{got}" if loc else f"recipe: {message}{got}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if len(text) > MAX_OVERRIDE_CHARS:
        raise KDistillError(f"override {shown(text)}: {len(text):,} characters, over the {MAX_OVERRIDE_CHARS:,} an "
                            "override may have; set a big value in the recipe file")
    if "=" not in text:
        raise KDistillError(f"override {shown(text)}: write it as key.sub=value, e.g. stages.distil.epochs=3")
    key, _, raw = text.partition("=")
    if key.count(".") >= MAX_DEPTH:
        raise KDistillError(f"override {shown(text)}: a key of more than {MAX_DEPTH} parts; a recipe nests a few")
    try:
        value = read_yaml(raw, f"override {shown(text)}") if raw else None
    except _NotYaml:
        value = raw
    return key.strip().split("."), value


def apply_override(tree: dict, text: str) -> None:
    """Set ``key.sub=value`` in a raw recipe tree. List items are addressed by index or by name."""
    path, value = parse_override(text)
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            index = _list_index(node, part, text)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise KDistillError(f"override {shown(text)}: {cut('.'.join(path[:i]))} is not a section")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:  # an absent or empty section
                node[part] = {}
            node = node[part]


def _list_index(items: list, part: str, text: str) -> int:
    if part.lstrip("-").isdigit() and -len(items) <= int(part) < len(items):
        return int(part)
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name", item.get("loss")) == part:
            return index
    names = [str(it.get("name", it.get("loss"))) for it in items if isinstance(it, dict)]
    raise KDistillError(f"override {shown(text)}: no item {shown(part)}; use an index or one of {shown(names, 200)}")


def validate(tree: dict) -> Recipe:
    """Validate a raw recipe tree; the first problem becomes a one-line ``KDistillError``."""
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise KDistillError(_format_error(err)) from None


def load_recipe(source: str | Path | dict | Recipe, overrides: list[str] = ()) -> Recipe:
    """Load a recipe from a YAML file, a dict or a Recipe, apply overrides, validate.

    Relative weight paths in a file are resolved against the file's folder.
    """
    if isinstance(source, Recipe):
        tree = source.model_dump()
    elif isinstance(source, dict):
        _check_values(source)  # before copying it
        tree = copy.deepcopy(source)
    else:
        path = user_path(source, "recipe")
        tree = read_recipe_file(path) or {}
        if not isinstance(tree, dict):
            raise KDistillError(f"recipe: {path} must hold a mapping of keys at the top level.")
        _resolve_weight_paths(tree, path.parent)
    for text in overrides:
        apply_override(tree, text)
    return validate(tree)


def read_recipe_file(path: Path) -> Any:
    """The YAML tree of a recipe file, read within the limits: at most MAX_RECIPE_BYTES, and at
    most MAX_VALUES values once its aliases are expanded."""
    if path.is_dir():
        raise KDistillError(f"recipe: {path} is a folder; give the path to a .yaml recipe.")
    if not path.is_file():
        raise KDistillError(f"recipe: file {path} not found; give the path to a .yaml recipe.")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:  # before reading it: a recipe is a few KB
        raise KDistillError(f"recipe: {path} is {size:,} bytes, over the {MAX_RECIPE_BYTES:,} a recipe may have; "
                            "give the path to a .yaml recipe (data goes in files the recipe names)")
    with path.open("rb") as file:
        data = file.read(MAX_RECIPE_BYTES + 1)  # the file may have grown since
    if len(data) > MAX_RECIPE_BYTES:
        raise KDistillError(f"recipe: {path} is over the {MAX_RECIPE_BYTES:,} bytes a recipe may have; "
                            "give the path to a .yaml recipe (data goes in files the recipe names)")
    try:
        return read_yaml(data.decode("utf8"), f"recipe: {path}")
    except UnicodeDecodeError:
        raise KDistillError(f"recipe: {path} is not a text file; give the path to a .yaml recipe.") from None
    except _NotYaml as err:
        raise KDistillError(f"recipe: {path} is not valid YAML: {err}") from None


# a recipe is a few KB holding a few hundred values: these limits are far above any real one,
# and far below what takes time or memory to read, validate or echo
MAX_RECIPE_BYTES = 1 << 20
MAX_OVERRIDE_CHARS = 10_000
MAX_VALUES = 5_000  # scalars, lists and mappings, aliases expanded (YAML reads 5,000 in half a second)
MAX_DEPTH = 50  # lists and mappings inside each other (a recipe nests 6 deep; Python recursion ends near 1000)


class _NotYaml(Exception):
    """The text is not YAML (the message: the parser's first line, shortened)."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml's SafeLoader, counting the values the document expands to as it composes it: an
    alias counts as the whole block it repeats, so an alias bomb (levels of ``&a [*b, *b, ...]``,
    a few lines expanding to billions of values for whatever walks it) is refused as soon as
    the count passes ``MAX_VALUES``, and an alias inside the block it names (a cycle) at once."""

    def __init__(self, stream):
        super().__init__(stream)
        self.values = self.depth = 0
        self.sizes: dict[int, tuple[yaml.Node, int]] = {}  # id(node) -> (node, values it expands to)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self.sizes:
                    raise _TooBig(f"the alias *{cut(event.anchor)} is inside the block it names, a cycle; "
                                  "write the value out")
                self._count(self.sizes[id(target)][1])
            return super().compose_node(parent, index)
        before = self.values
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _TooBig(f"nests lists and mappings more than {MAX_DEPTH} levels deep; a recipe nests a few")
        node = super().compose_node(parent, index)
        self.depth -= 1
        self._count(1)
        self.sizes[id(node)] = (node, self.values - before)
        return node

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise _TooBig(f"holds more than {MAX_VALUES:,} values (each use of a YAML alias counted as the "
                          "block it repeats); a recipe holds a few hundred: write it out plainly")


class _TooBig(Exception):
    pass


def read_yaml(text: str, what: str) -> Any:
    """``text`` as a YAML tree, within ``MAX_VALUES``; ``what`` names it in the error."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters already
        return loader.get_single_data()
    except _TooBig as err:
        raise KDistillError(f"{what}: {err}") from None
    # what YAML's constructors raise on a bad scalar: an integer of more than 4300 digits, a date
    # 2001-13-01 (ValueError), a '!!timestamp' tag on a non-date (AttributeError)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as err:
        raise _NotYaml(cut(str(err).splitlines()[0], 200) if str(err) else type(err).__name__) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_values(tree: Any) -> None:
    """A recipe given as a dict holds at most MAX_VALUES values (a list or mapping shared by
    several keys counted at each): counted up to the limit, never walked whole."""
    count, todo = 0, [iter([tree])]
    while todo:
        value = next(todo[-1], todo)  # the list itself: this level is done
        if value is todo:
            todo.pop()
            continue
        count += 1
        if count > MAX_VALUES:
            raise KDistillError(f"recipe: holds more than {MAX_VALUES:,} values; a recipe holds a few hundred "
                                "(data is passed as run(recipe, data=...) or named by data.path)")
        if len(todo) > MAX_DEPTH:
            raise KDistillError(f"recipe: nests lists and mappings more than {MAX_DEPTH} levels deep; a recipe "
                                "nests a few")
        if isinstance(value, dict):
            todo.append(itertools.chain.from_iterable(value.items()))
        elif isinstance(value, (list, tuple)):
            todo.append(iter(value))


def _resolve_weight_paths(tree: dict, folder: Path) -> None:
    extras = tree.get("teachers") if isinstance(tree.get("teachers"), dict) else {}
    for spec in [tree.get("teacher"), tree.get("student"), *extras.values()]:
        if isinstance(spec, dict) and isinstance(spec.get("weights"), str):
            weights = Path(spec["weights"])
            if not weights.is_absolute():
                spec["weights"] = str((folder / weights).resolve())


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
