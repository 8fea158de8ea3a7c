"""The recipe's schema: every section as a pydantic model, checked field by field.

Pure schema: no loss, family or model registry is read here (``recipe/checks.py`` runs the
checks that need them, after this validation); everything downstream takes plain keyword
arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from kdistill.errors import KDistillError, shown
from kdistill.paths import check_run_name
from kdistill.recipe.sources import SOURCES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN weight fails here, not at step 1


Amount = Union[int, float]  # a count (600) or a fraction of the training set (0.01)


def located(loc: tuple, message: str, value: Any = None) -> ValidationError:
    """A validation error at ``loc`` below the model that raises it (a validator of a section
    naming one of its fields), worded as pydantic's own: ``value`` is echoed as ``(got ...)``
    unless it is None (a section, whose mapping is never echoed)."""
    detail = InitErrorDetails(type="value_error", loc=loc, input={} if value is None else value,
                              ctx={"error": ValueError(message)})
    return ValidationError.from_exception_data("Recipe", [detail])


class Section(Strict):
    """An option section of ``data`` (``data.text``, ``data.images``, ...) that some sources read:
    each source's spec declares the sections it reads, with the fields it reads of them.
    ``KIND`` names the sources that read the section in a message ("the image file sources")."""

    KIND: ClassVar[str] = "data"


class LoaderSpec(Strict):
    """How a stage's batches are fetched: in the main process (0 workers) or by DataLoader workers."""

    workers: int = Field(0, ge=0, le=256, description="worker processes; 0: the main process fetches")
    prefetch: int = Field(2, ge=1, le=64, description="batches each worker keeps ready")
    nice: int = Field(10, ge=0, le=19, description=(
        "how much lower the workers' scheduling priority is than the training process's (Unix nice, 0: the "
        "same): decoding takes the CPU time the training step leaves rather than preempting its threads (on few "
        "cores, where workers and training compete for them)"))


class DataSpec(Strict):
    """The recipe's ``data`` section: the fields every source shares.

    A source validates the section with its own subclass (registered in ``recipe/sources.py``),
    which adds the option sections it reads (``data.text``, ``data.images``, ``data.files``,
    ``data.lm``) and its own rules; ``DataSpec(source=...)`` and a recipe's ``data`` build that
    subclass. An option another source reads, set here to other than its default, is refused
    naming the sources that read it; at its default it is dropped (a recipe written for several
    sources, or one resolved by an older version, gives them).
    """

    source: str = Field("fashion_mnist", description="the data source, a name registered in recipe/sources.py")
    path: str | None = Field(None, description=(
        "IDX folder (MNIST's work the same), WordNet folder, text or CSV file; image_folder: a folder of class "
        "subfolders or a CSV/JSONL list; hf_dataset: a save_to_disk folder or parquet / JSON / CSV / Arrow files; "
        "npy: an (N, ...) .npy array"))
    labelled: Amount = Field(600, description=(
        "labelled samples, a count (600) or a fraction (0.01) of the labelled rows, stratified"))
    val: Amount = Field(0, description=(
        "held out of training to judge epochs (keep_best); token blocks: drawn from all"))
    transfer: Amount | None = Field(None, description=(
        "how many of the remaining samples form the transfer set, a count or a fraction (default: all)"))
    normalize: Literal["auto", "teacher", "data", "none"] = Field("auto", description=(
        "auto: the teacher's recorded preprocessing if its weights record one, else statistics of the training "
        "data when this run trains the teacher (or there is none and the source is built in), else none; "
        "teacher: the teacher's recorded one; data: the training data's per-channel mean and std (true); none: "
        "the inputs as they are (false)"))
    split_seed: int | None = Field(None, description="the splits depend on this seed alone; default: the recipe's seed")
    check_teacher: bool = Field(True, description=(
        "a teacher loaded from weights (weights, or a pretrained args.path) that scores near chance on the "
        "labelled test inputs, or far below the test accuracy its weights record, stops the run before training "
        "(its inputs likely differ from those it was trained on); false: go on"))
    loader: LoaderSpec = Field(default_factory=LoaderSpec, description=(
        "how a stage's batches are fetched: in the main process (0 workers) or by DataLoader workers"))
    classes: list[str] | None = Field(None, description=(
        "the class names in the order of the model's outputs: a class folder, a name in a label column or a "
        "ClassLabel name maps to its index here (default: the names sorted); integer labels are indices into it. "
        "A name in the data missing here is refused, and so is a teacher.weights recording other names (kdistill "
        "records them in the weights it writes)"))

    def __new__(cls, *args, **fields):
        """``DataSpec(source=...)`` builds the source's own spec (its ``__init__`` validates)."""
        if cls is DataSpec:
            cls = cls.for_source(fields.get("source", DEFAULT_SOURCE))
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _by_source(cls, value, handler):
        """The section as the source's own spec validates it."""
        if cls is not DataSpec or not isinstance(value, dict):
            return handler(value)
        name = value.get("source", DEFAULT_SOURCE)
        if not isinstance(name, str) or name not in SOURCES:
            choices = [repr(n) for n in SOURCES]
            raise located(("source",), f"Input should be {', '.join(choices[:-1])} or {choices[-1]}", name)
        return SOURCES[name].spec.model_validate(value)

    @model_validator(mode="before")
    @classmethod
    def _options_read(cls, value):
        return _unread_dropped(cls, value) if cls is not DataSpec and isinstance(value, dict) else value

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
    def _class_names(cls, value):
        if value is None:
            return value
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

    # what the layers above ask of the data, answered by each source's spec where it differs
    def random_views(self) -> bool:
        """Whether a training batch's inputs are decoded anew at random each epoch (so a disk
        cache of the teacher's outputs cannot hold them)."""
        return False

    def class_names(self) -> list[str] | None:
        """The names of the source's classes where the source knows them without its data
        (``data.classes`` and the data's own names come first)."""
        return None

    def text_length(self) -> int | None:
        """The tokens kept of each text, where the inputs are texts cut to one length."""
        return None

    # arrays whose scaling kdistill infers from their dtype (``source.stored_scale``): the run
    # says which rule it applied (data passed from Python is said too)
    says_scaling: ClassVar[bool] = False

    def raw_inputs(self, input_shape: list) -> tuple[dict, list[dict], list[dict]] | None:
        """What the source stores for a sample, for the exported ``student.json``: ``(raw_input,
        steps before the cast to float32, steps after it)``, for a model taking ``input_shape``
        (``[None, ...]``); None: float32 inputs as passed to ``kdistill.run``."""
        return None

    @classmethod
    def for_source(cls, name: Any) -> type["DataSpec"]:
        """The spec class of the source ``name`` (DataSpec itself for a name not registered)."""
        return SOURCES[name].spec if isinstance(name, str) and name in SOURCES else cls


DEFAULT_SOURCE = DataSpec.model_fields["source"].default


def no_path(source: str, value: str | None, why: str) -> str | None:
    """A source whose data is not read from a path refuses ``data.path`` (``why``: where its data
    comes from), in a spec's ``path`` validator."""
    if value is not None:
        raise ValueError(f"does not apply to source {shown(source)}, whose data {why}; drop data.path")
    return value


def _unread_dropped(spec: type[DataSpec], value: dict) -> dict:
    """``value`` (a ``data`` section) without the options ``spec`` does not read but another
    source does, each at its default; one set to something else is refused, naming its readers."""
    source, kept = value.get("source", DEFAULT_SOURCE), dict(value)
    for section, given in value.items():
        readers = _section_readers(section)
        if not readers or not isinstance(given, dict):
            continue  # not an option section (the schema judges it), or not a mapping (it says so)
        own = spec.model_fields.get(section)
        own_fields = own.annotation.model_fields if own is not None else {}
        rest = {key: raw for key, raw in given.items() if key in own_fields}
        for key, raw in given.items():
            if key in own_fields:
                continue
            field_readers = {name: model for name, model in readers.items() if key in model.model_fields}
            if not field_readers:  # an unknown key: the schema names it
                rest[key] = raw
            elif not _at_default(next(iter(field_readers.values())), key, raw):
                _refuse(source, section, key, readers if own is None else field_readers, own is None)
        if own is not None:
            kept[section] = rest
        else:
            del kept[section]
    return kept


def _section_readers(section: str) -> dict[str, type[Section]]:
    """source name -> its model of the option section ``section``, for every source reading it."""
    readers = {}
    for name, info in SOURCES.items():
        field = info.spec.model_fields.get(section) if section not in DataSpec.model_fields else None
        if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            readers[name] = field.annotation
    return readers


def _at_default(model: type[Section], key: str, raw: Any) -> bool:
    try:
        given = getattr(model.model_validate({key: raw}), key)
    except ValidationError:
        return False
    return given == model.model_fields[key].get_default(call_default_factory=True)


def _refuse(source: Any, section: str, key: str, readers: dict, whole_section: bool):
    if whole_section:  # the source reads nothing of the section
        kind = next(iter(readers.values())).KIND
        raise located((section,), f"{key} applies only to the {kind} sources ({', '.join(readers)}), not "
                                  f"{shown(source)}; drop data.{section}.{key}")
    raise ValueError(f"data.{section}.{key} applies only to source {' and '.join(shown(r) for r in readers)}, not "
                     f"{shown(source)}; drop data.{section}.{key}")


class SubnetSpec(Strict):
    """A student cut from the teacher: chosen blocks, started from the teacher's weights."""

    keep: list[int] | dict[str, list[int]] | None = Field(None, description=(
        "indices of the teacher's layers, or {stack: indices}"))
    layers: int | None = Field(None, ge=1, description="or: how many of a transformer's layers to keep (pick: which)")
    pick: Literal["even", "first_last", "first", "block"] = Field("even", description=(
        "which layers `layers` keeps; block: drop the contiguous block of layers whose removal changes a causal "
        "language model's predictions least on a calibration batch (Minitron's depth pruning)"))
    heads: int | None = Field(None, ge=1, description="attention heads kept in every layer (transformers)")
    ffn: int | None = Field(None, ge=1, description="feed-forward width kept in every layer (transformers)")

    @model_validator(mode="after")
    def _one_choice(self) -> "SubnetSpec":
        if (self.keep is None) == (self.layers is None):
            raise ValueError("from_teacher: give exactly one of keep (indices) and layers (a count)")
        return self


class ModelSpec(Strict):
    model: str | None = Field(None, description=(
        "a registered name (cnn, resnet, mlp, hf) or 'package.module:callable'"))
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's builder")
    weights: str | None = Field(None, description="a .safetensors file")
    from_teacher: SubnetSpec | None = Field(None, description=(
        "student only: a sub-network of the teacher, in place of model"))

    @model_validator(mode="after")
    def _model_or_subnet(self) -> "ModelSpec":
        if (self.model is None) == (self.from_teacher is None):
            raise ValueError("give exactly one of model (a name) and from_teacher (a sub-network of the teacher)")
        return self


class TermSpec(Strict):
    loss: str = Field(description="a registered loss name (docs/reference/methods.md)")
    weight: float = Field(1.0, description="the term's weight in the stage's weighted sum")
    student: str | list[str] | None = Field(None, description=(
        "a module path, 'logits' or 'weights'; a list feeds the loss several taps; default: the feature the "
        "loss's contract reads"))
    teacher: str | list[str] | None = Field(None, description=(
        "the teacher feature: a module path, 'logits' or a provider's ('embedding', 'projected'); a list "
        "feeds the loss several taps; default: the feature the loss's contract reads of the teacher"))
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the loss")
    name: str | None = Field(None, description="logged name, default the loss name")


class EmbeddingSpec(Strict):
    """Shallow distillation: the teacher feature 'embedding' is a PCA of a teacher tap."""

    teacher: str = Field(description="the teacher tap the space is drawn from")
    student: str = Field(description="the student tap whose adapted output is the student's embedding")
    dim: int = Field(32, ge=1, description="the width of the embedding space (PCA components)")
    method: Literal["pca"] = Field("pca", description="how the space is drawn")
    max_samples: int = Field(10000, ge=2, description="training inputs the PCA is fitted on (no labels read)")
    shots: list[int] = Field(default_factory=lambda: [1, 5, 10, 50], description="labels a class in the report")


class OptimizerSpec(Strict):
    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="the optimizer")
    lr: float = Field(0.05, gt=0, description="the learning rate (the peak, with a schedule)")
    momentum: float = Field(0.9, description="sgd: the momentum")
    nesterov: bool = Field(True, description="sgd: Nesterov momentum")
    weight_decay: float = Field(5e-4, description="the weight decay")
    decay_bias_and_norm: bool = Field(False, description=(
        "weight decay on biases and normalisation layers' weights too (false: on every other parameter, as the "
        "Hugging Face Trainer does; train/optim.no_decay_params)"))


class ScheduleSpec(Strict):
    name: Literal["cosine", "step", "constant"] = Field("cosine", description="the learning-rate schedule")
    warmup_epochs: float = Field(0.0, description="epochs of linear warmup from 0 to lr")
    step_size: int = Field(10, description="epochs, for 'step'")
    gamma: float = Field(0.1, description="for 'step'")


class AugmentSpec(Strict):
    shift: int = Field(0, description="random translation, pixels")
    flip: bool = Field(False, description="random horizontal flip")


class CacheSpec(Strict):
    """Teacher outputs on disk, built once (or by ``kdistill cache``) and memory-mapped."""

    dir: str = Field(".kdistill/cache", description=(
        "caches are folders under it, named by teacher, data and augmentation"))
    views: int = Field(1, ge=1, description=(
        "augmented views of every sample (with augment); training draws among them"))
    topk: int | None = Field(None, ge=1, description="keep only the k largest logits (see kdistill/train/cache.py)")
    dtype: Literal["float16", "float32"] = Field("float16", description="the dtype the teacher's outputs are kept in")


class StageSpec(Strict):
    name: str = Field(description="the stage's name, unique in the recipe")
    train: Literal["student", "teacher", "baseline"] = Field("student", description="the model the stage trains")
    data: Literal["labelled", "transfer", "labelled+transfer", "full"] = Field("labelled", description=(
        "the samples the stage trains on; full (the transfer set with its labels) only for train: teacher"))
    epochs: int = Field(1, ge=1, description="passes over the stage's data")
    batch_size: int = Field(128, ge=1, description="samples a batch (an optimisation step)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="the optimizer")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="the learning-rate schedule")
    grad_clip: float | None = Field(5.0, description="the gradients' norm is clipped to it; null: not clipped")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="random shifts and flips of image batches")
    amp: Literal[False, "bf16", "fp16"] = Field(False, description=(
        "autocast: bf16 on CUDA and the CPU; fp16 on CUDA only (ignored on CPU)"))
    accumulate: int = Field(1, ge=1, description=(
        "micro-batches each batch is split into, their gradients added up before one update: the activations of "
        "batch_size / accumulate samples at a time (losses comparing the samples of a batch, and batch norm, see "
        "one micro-batch)"))
    loss: list[TermSpec] = Field(default_factory=lambda: [TermSpec(loss="ce")], min_length=1, description=(
        "the loss terms, summed by weight"))
    init_from: str | None = Field(None, description="start from the weights another stage ended with")
    cache_teacher: bool = Field(True, description=(
        "teacher outputs computed once, in memory, when there is no augmentation"))
    cache: CacheSpec | None = Field(None, description="or on disk, with augmented views")
    channels_last: bool = Field(False, description="NHWC layout for image batches (GPU convolutions)")
    compile: bool | str = Field(False, description="torch.compile the student: true (inductor) or a backend name")
    eval_every: int = Field(1, ge=1, description="evaluate every N epochs (and always after the last)")
    keep_best: bool = Field(False, description=(
        "end the stage on the weights of its best evaluated epoch, judged on the validation set (data.val; the "
        "family's score: accuracy, cosine to the teacher, perplexity), not the last"))

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

    enabled: bool = Field(True, description="write checkpoints")
    every: int = Field(0, ge=0, description=(
        "also every N optimisation steps (0: at the end of every epoch only)"))
    keep: int = Field(2, ge=1, description="the newest kept; an unreadable one falls back to the one before")


class Recipe(Strict):
    name: str = Field("run", description="the run's name: its folder is runs/<name>")
    seed: int = Field(0, description="the seed of the run's random draws")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch; default: torch's choice")
    data: SerializeAsAny[DataSpec] = Field(default_factory=DataSpec, description=(
        "the data: its source and splits (dumped with its source's own options)"))
    teacher: ModelSpec | None = Field(None, description="the teacher, frozen while a student learns from it")
    teachers: dict[str, ModelSpec] = Field(default_factory=dict, description=(
        "extra frozen teachers, tapped as 'name:path'"))
    student: ModelSpec | None = Field(None, description="may be left out when the run trains only a teacher")
    stages: list[StageSpec] = Field(min_length=1, description="the training stages, run in order")
    embedding: EmbeddingSpec | None = Field(None, description=(
        "shallow distillation: the teacher feature 'embedding' is a PCA of a teacher tap"))
    latency: bool = Field(True, description="measure CPU latency in the final evaluation")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description=(
        "checkpoints in the run directory, to resume a run that stopped (kdistill run --resume)"))
    tensorboard: bool = Field(False, description=(
        "also log metrics to runs/<name>/tensorboard (pip install tensorboard)"))
    task: str | None = Field(None, description=(
        "the model family (kdistill.families): classify: models output class logits; embed: sentence-embedding "
        "models, judged by agreement with the teacher and few-label accuracy; generate: causal language models, "
        "judged by perplexity, agreement with the teacher and generation speed. Default: the first task "
        "data.source serves (recipe/sources.py)."))

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
        random = self.data.random_views()
        for i, stage in enumerate(self.stages):
            if stage.cache is not None and random:
                raise ValueError(f"stages.{i}.cache: the cache stores the teacher's outputs of fixed views, but "
                                 "data.images decodes a new random view every epoch (random_crop / flip); turn those "
                                 "off for a cached stage (use the stage's augment shift/flip, cached by views), "
                                 "or drop cache")
        return self

    @model_validator(mode="after")
    def _stages_consistent(self) -> "Recipe":
        if self.task is None:  # the source's first (checks.py judges a task given)
            self.task = SOURCES[self.data.source].tasks[0]
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
