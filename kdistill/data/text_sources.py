"""The recipe's text sources, ``wordnet``, ``text`` and ``csv``: their options (``data.text``),
the texts each reads, and their one loader: the texts split into training and test sets, each a
``TokenSource`` tokenised with ``data.text.tokenizer`` (default the teacher's)."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from kdistill.data.source import Source
from kdistill.data.text import TextSet, TokenSource, load_csv, load_text_file, load_wordnet, split_texts
from kdistill.errors import KDistillError, shown
from kdistill.recipe.schema import Amount, DataSpec, Section, located
from kdistill.recipe.sources import register_source


class TokenData(DataSpec):
    """A source whose inputs are token ids: nothing to normalise per channel."""

    @model_validator(mode="after")
    def _normalize_applies(self) -> "TokenData":
        if self.normalize in ("teacher", "data"):
            raise located(("normalize",), f"{shown(self.normalize)} does not apply to source {shown(self.source)}, "
                                          "whose inputs are token ids; drop data.normalize", self.normalize)
        return self


def teacher_tokenizer(recipe) -> str | None:
    """The tokenizer a text source defaults to: the teacher's (its ``args.path``)."""
    teacher = recipe.teacher if recipe is not None else None
    return teacher.args.get("path") or teacher.args.get("tokenizer") if teacher is not None else None


class TextSpec(Section):
    """``data.text``: how a text source's texts are held out and tokenised."""

    KIND = "text"
    test: Amount = Field(0.1, description="texts held out as the test set (a count or a fraction)")
    tokenizer: str | None = Field(None, description="a folder or model id; default the teacher's (args.path)")
    max_length: int = Field(128, ge=2, description=(
        "tokens kept of each text, special tokens included: the run's one length, for training, evaluation and "
        "the exported student_hf/ alike (its encoders take it in place of their own args.max_length, which may be "
        "left out; set to another value, it is refused)"))


class TextData(TokenData):
    """``text``: a text file, one text a line (no labels)."""

    text: TextSpec = Field(default_factory=TextSpec, description="data.text: how a text source's texts are held out and tokenised")

    def text_length(self) -> int | None:
        return self.text.max_length

    def read_texts(self) -> TextSet:
        return load_text_file(self._file())

    def _file(self) -> str:
        if self.path is None:
            raise KDistillError(f"data.path: source {shown(self.source)} needs the file to read; set data.path=<file>.")
        return self.path


class WordnetText(TextSpec):
    pos: str | list[str] = Field("noun", description="noun, verb, adj, adv or all")
    examples: bool = Field(True, description="the glosses' quoted example sentences too")


class WordnetData(TextData):
    """``wordnet``: WordNet's glosses (``data.path``: its folder, default /usr/share/wordnet),
    labelled by lexicographer file."""

    text: WordnetText = Field(default_factory=WordnetText, description="data.text: how a text source's texts are held out and tokenised")

    def read_texts(self) -> TextSet:
        pos = self.text.pos
        return load_wordnet(self.path, tuple(pos) if isinstance(pos, list) else pos, self.text.examples)

    def class_names(self) -> list[str] | None:
        return load_wordnet(self.path, self.text.pos, examples=False).classes


class CsvText(TextSpec):
    text_column: str = Field("text", description="the texts' column")
    label_column: str | None = Field("label", description="null for unlabelled text")


class CsvData(TextData):
    """``csv``: a CSV file of texts and (optionally) their labels."""

    text: CsvText = Field(default_factory=CsvText, description="data.text: how a text source's texts are held out and tokenised")

    def read_texts(self) -> TextSet:
        return load_csv(self._file(), self.text.text_column, self.text.label_column, self.classes)


def load_text_data(spec: TextData, recipe=None) -> tuple[Source, Source]:
    """(train, test) of a text source, tokenised with ``data.text.tokenizer`` (default the
    teacher's), the test texts held out with ``data.split_seed`` (default the recipe's seed)."""
    from kdistill.data.tokenizer import load_tokenizer

    name = spec.text.tokenizer or teacher_tokenizer(recipe)
    if not name:
        raise KDistillError("data.text.tokenizer: text needs a tokenizer; set it, or give the teacher "
                            "as model: hf with args.path.")
    tokenizer = load_tokenizer(name)
    texts = spec.read_texts()
    seed = recipe.seed if recipe is not None else 0
    split_seed = seed if spec.split_seed is None else spec.split_seed
    sources = []
    for part in split_texts(texts, spec.text.test, split_seed):
        sources.append(TokenSource(part.texts, torch.tensor(part.labels), tokenizer, spec.text.max_length,
                                   num_classes=len(texts.classes), classes=texts.classes, name=spec.source))
    return sources[0], sources[1]


register_source("wordnet", WordnetData, tasks=("embed", "classify"), loader=load_text_data)
register_source("text", TextData, tasks=("embed", "classify"), loader=load_text_data)
register_source("csv", CsvData, tasks=("embed", "classify"), loader=load_text_data)
