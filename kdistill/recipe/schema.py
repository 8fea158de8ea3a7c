"""The recipe's schema: every section as a pydantic model, checked field by field.

Pure schema: no loss, family or model registry is read here (``recipe/checks.py`` runs the
checks that need them, after this validation); everything downstream takes plain keyword
arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdistill.errors import KDistillError, shown
from kdistill.paths import check_run_name


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
    # agreement with the teacher and generation speed.
    task: Literal["classify", "embed", "generate"] | None = None

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
            if stage.data == "full" and stage.train != "teacher":
                raise ValueError(
                    f"stages.{i}.data: 'full' uses the transfer set's labels and is only for "
                    "train: teacher; use labelled, transfer or labelled+transfer"
                )
            self._check_options(i, stage)
            if stage.train == "teacher" and self.teacher is None:
                raise ValueError(f"stages.{i} ({stage.name}) trains the teacher but no teacher is set")
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
