"""Text data for distilling sentence-embedding models: texts and labels, no tokenization.

Sources: WordNet glosses (definitions and their quoted examples, labelled by lexicographer
file), a plain text file (one sentence a line) and a CSV file with a text and a label column.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdistill.data.fingerprint import fingerprint_text
from kdistill.data.labels import label_ids
from kdistill.data.source import Source
from kdistill.data.splits import UNLABELLED, stratified_pick
from kdistill.errors import KDistillError, shown

WORDNET_DIR = "/usr/share/wordnet"
WORDNET_HINT = "install it with 'sudo apt-get install wordnet-base' or set data.path to a folder holding"
POS_FILES = ("noun", "verb", "adj", "adv")  # the order "all" reads them in
# WordNet's 45 lexicographer files; a field of two digits in each data line indexes this list
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]  # fmt: skip
QUOTED = re.compile(r'"([^"]*)"')


@dataclass
class TextSet:
    """Texts in memory with one integer label each.

    Args:
        texts: the ``N`` texts.
        labels: ``N`` class indices into ``classes``; ``-1`` where a text has no label.
        classes: class names, index = label; ``[]`` when the set is unlabelled.
    """

    texts: list[str]
    labels: list[int]
    classes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise KDistillError(
                f"data: {len(self.texts)} texts but {len(self.labels)} labels; give one label per text."
            )
        bad = [y for y in self.labels if not UNLABELLED <= y < len(self.classes)]
        if bad:
            raise KDistillError(
                f"data: label {bad[0]} is outside -1..{len(self.classes) - 1}; "
                f"labels index the {len(self.classes)} classes, -1 marks a text without one."
            )

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextSet":
        """The texts at ``indices`` (a sequence, numpy array or tensor of ints), same classes."""
        picked = [int(i) for i in indices]
        return TextSet([self.texts[i] for i in picked], [self.labels[i] for i in picked], list(self.classes))


def _read_lexnames(folder: Path) -> list[str]:
    """Lexicographer-file names, index = ``lex_filenum``: from ``folder/lexnames`` if it exists."""
    file = folder / "lexnames"
    if not file.is_file():
        return list(LEXNAMES)
    names: dict[int, str] = {}
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()  # "05  noun.animal  1"
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return [names.get(i, f"lexfile.{i:02d}") for i in range(max(names, default=-1) + 1)] or list(LEXNAMES)


def _pos_list(pos: str | tuple[str, ...]) -> list[str]:
    """The data-file suffixes ``pos`` names: ``"noun"``, a tuple of them, or ``"all"``."""
    chosen = list(POS_FILES) if pos == "all" else [pos] if isinstance(pos, str) else list(pos)
    unknown = [p for p in chosen if p not in POS_FILES]
    if unknown or not chosen:
        raise KDistillError(
            f"data.pos: {shown(unknown[0] if unknown else pos)} is not a WordNet part of speech; "
            f"use one of {', '.join(POS_FILES)}, a list of them, or 'all'."
        )
    return list(dict.fromkeys(chosen))


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """Split a WordNet gloss into (definition, quoted example sentences without quotes).

    The definition is the text before the first quoted example, stripped of trailing ``;``,
    ``:`` and spaces; e.g. ``'a feat; "he rallied"; "a rally"'`` -> ``('a feat', ['he rallied', 'a rally'])``.
    """
    definition = gloss.split('"', 1)[0].strip().rstrip(";: ")
    examples = [e.strip() for e in QUOTED.findall(gloss)]
    return definition, [e for e in examples if e]


def _read_data_file(file: Path) -> list[tuple[int, str]]:
    """The synsets of one WordNet ``data.*`` file as ``(lex_filenum, gloss)`` pairs, in file order."""
    synsets = []
    with open(file, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():  # the licence header
                continue
            fields = line.split(maxsplit=2)
            if len(fields) < 3 or not fields[1].isdigit():
                raise KDistillError(
                    f"data: {file} line {number} is not a WordNet data line "
                    "('offset lex_filenum ss_type ... | gloss'); point data.path at WordNet's dict folder."
                )
            synsets.append((int(fields[1]), line.partition(" | ")[2].strip()))
    return synsets


def load_wordnet(
    path: str | Path | None = None, pos: str | tuple[str, ...] = "noun", examples: bool = True
) -> TextSet:
    """WordNet glosses as texts labelled by the synset's lexicographer file (``noun.animal``...).

    Each synset gives its definition and, with ``examples``, each quoted example sentence.

    Args:
        path: the folder holding ``data.noun`` etc. (default ``/usr/share/wordnet``).
        pos: ``"noun"``, ``"verb"``, ``"adj"``, ``"adv"``, a tuple of them, or ``"all"``.
        examples: also return the quoted example sentences of each gloss.

    Returns:
        A TextSet whose classes are the lexicographer files that occur in the chosen data files,
        in WordNet's order (nouns alone: 26 classes, ``noun.Tops`` .. ``noun.time``).
    """
    folder = Path(path or WORDNET_DIR)
    chosen = _pos_list(pos)
    for p in chosen:
        if not (folder / f"data.{p}").is_file():
            raise KDistillError(
                f"data: WordNet not found at {folder} (no data.{p}); {WORDNET_HINT} data.{p}."
            )
    lexnames = _read_lexnames(folder)
    synsets = [s for p in chosen for s in _read_data_file(folder / f"data.{p}")]
    unknown = sorted({lex for lex, _ in synsets if lex >= len(lexnames)})
    if unknown:
        raise KDistillError(
            f"data: WordNet lex_filenum {unknown[0]:02d} has no lexicographer-file name "
            f"(only {len(lexnames)} known); check the lexnames file in {folder}."
        )
    used = sorted({lex for lex, _ in synsets})
    label_of = {lex: i for i, lex in enumerate(used)}
    texts, labels = [], []
    for lex, gloss in synsets:
        definition, quoted = split_gloss(gloss)
        for text in [definition, *(quoted if examples else [])]:
            texts.append(text)
            labels.append(label_of[lex])
    return TextSet(texts, labels, [lexnames[lex] for lex in used])


def open_text(path: str | Path, what: str):
    """The text file at ``path``, open for reading (UTF-8, a byte-order mark dropped, newlines as
    written, for ``csv``), or a one-line error naming ``what`` (``"CSV file"``) when it is not found."""
    file = Path(path)
    if not file.is_file():
        raise KDistillError(f"data: {what} {file} not found; set data.path to an existing file.")
    # utf-8-sig: a byte-order mark from a spreadsheet export does not end up in the first text
    return open(file, encoding="utf-8-sig", newline="")


def load_text_file(path: str | Path) -> TextSet:
    """One text a line (surrounding spaces stripped, blank lines skipped), unlabelled."""
    with open_text(path, "text file") as f:
        texts = [line.strip() for line in f if line.strip()]
    if not texts:
        raise KDistillError(f"data: text file {path} holds no text; write one sentence a line.")
    return TextSet(texts, [UNLABELLED] * len(texts), [])


def load_csv(path: str | Path, text_column: str = "text", label_column: str | None = "label",
             classes: list[str] | None = None) -> TextSet:
    """Texts and labels from a CSV file with a header row.

    Rows with an empty text are skipped; a row with an empty label gets label ``-1``. Labels
    follow ``data/labels.py``'s one rule: class names map to their index in ``classes``
    (``data.classes``; default: the names sorted), integers are class ids, and the classes are
    then named by their number.

    Args:
        text_column: the column holding the texts.
        label_column: the column holding class names or ids; None for an unlabelled set.
        classes: the class names in order, or None.
    """
    with open_text(path, "CSV file") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        for name, role in ((text_column, "text_column"), (label_column, "label_column")):
            if name is not None and name not in columns:
                fix = ", or set data.text.label_column: null for unlabelled texts" if role == "label_column" else ""
                raise KDistillError(
                    f"data.text.{role}: {path} has no column {shown(name)}; its columns are "
                    f"{', '.join(map(repr, columns)) or 'none'}: set data.text.{role} to one of them{fix}."
                )
        rows = []
        for row in reader:  # a short row reads None in the columns it lacks
            label = (row.get(label_column) or "") if label_column is not None else ""
            rows.append(((row.get(text_column) or "").strip(), label.strip(), reader.line_num))
    rows = [row for row in rows if row[0]]
    if not rows:
        raise KDistillError(f"data: CSV file {path} has no text in column {shown(text_column)}.")
    ids, names = label_ids([label for _, label, _ in rows], f"data.text.label_column: {path}", classes,
                           row=lambda i: f"line {rows[i][2]}")
    if names is None:  # class ids: the classes are named by their number
        names = [str(i) for i in range(int(ids.max()) + 1)] if len(ids) and ids.max() >= 0 else []
    return TextSet([t for t, _, _ in rows], ids.tolist(), names)


def _test_count(test: int | float, total: int) -> int:
    """How many of ``total`` texts go to the test set: a count, or a fraction in (0, 1)."""
    if isinstance(test, bool) or not isinstance(test, (int, float)):
        raise KDistillError(f"data.test: {shown(test)} is not a number; give a count or a fraction in (0, 1).")
    if isinstance(test, float):
        if not 0 < test < 1:
            raise KDistillError(f"data.test: {test} is not a fraction in (0, 1); give e.g. 0.2 or a count.")
        n = int(round(test * total))
    else:
        n = test
    if not 0 < n < total:
        raise KDistillError(
            f"data.test: {test} gives {n} of {total} texts to the test set; "
            f"leave at least one text on each side (1..{total - 1})."
        )
    return n


def split_texts(data: TextSet, test: int | float, seed: int) -> tuple[TextSet, TextSet]:
    """Split ``data`` into (train, test), stratified by label, the same for the same seed.

    Args:
        test: the test set's size, a count (500) or a fraction in (0, 1) (0.2).
        seed: the split depends on this seed alone.

    Returns:
        (train, test), each keeping the original order of its texts; the unlabelled texts
        (label -1) are spread in proportion like one more class.
    """
    n_test = _test_count(test, len(data))
    g = torch.Generator().manual_seed(seed)
    test_idx = stratified_pick(torch.tensor(data.labels, dtype=torch.long), n_test, g).tolist()
    in_test = set(test_idx)
    train_idx = [i for i in range(len(data)) if i not in in_test]
    return data.subset(train_idx), data.subset(test_idx)


def tokenize_texts(texts: list[str], tokenizer, max_length: int, batch: int = 4096) -> torch.Tensor:
    """Token ids and attention masks of ``texts``, stacked: ``(N, 2, L)`` int64, L the longest
    (at most ``max_length``), as the HF encoder models take them."""
    parts = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        parts.append(torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1))
    x = torch.cat(parts)
    used = int(x[:, 1].sum(1).max()) if len(x) else 1
    return x[:, :, :used].contiguous()


class TokenSource(Source):
    """Texts, tokenised as their batches are fetched (in the DataLoader workers when there are
    any): only the texts are held, never a tensor of every sample's token ids.

    A batch is ``(B, 2, L)`` int64, token ids and attention mask stacked, padded to ``L``: the
    longest text of the set (at most ``max_length`` tokens), measured once when the set is made,
    so that every batch of the set has one length (teacher outputs of token taps line up).
    """

    def __init__(self, texts: list[str], labels, tokenizer, max_length: int, num_classes: int = 0,
                 classes: list[str] | None = None, name: str = "text"):
        self.texts, self.tokenizer, self.name, self.classes = list(texts), tokenizer, name, classes
        self.y = labels
        self.num_classes = num_classes
        self._finish()
        self.length = 1
        for i in range(0, len(self.texts), 4096):
            enc = tokenizer(self.texts[i : i + 4096], truncation=True, max_length=max_length)
            self.length = max([self.length, *map(len, enc["input_ids"])])
        self._fp = None

    def fetch(self, index: torch.Tensor, view=None) -> torch.Tensor:
        enc = self.tokenizer([self.texts[i] for i in index.tolist()], padding="max_length", truncation=True,
                             max_length=self.length, return_tensors="pt")
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.blake2b(digest_size=16)
            for text in self.texts:
                h.update(text.encode("utf-8", "surrogatepass") + b"\0")
            vocab = getattr(self.tokenizer, "vocab_size", None)
            self._fp = fingerprint_text("text", h.hexdigest(), type(self.tokenizer).__name__,
                                        getattr(self.tokenizer, "name_or_path", ""), vocab, self.length)
        return self._fp

    @property
    def tokens(self) -> bool:
        return True
