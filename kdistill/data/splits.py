"""Split a training source into a labelled set, an unlabelled transfer set and a validation set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdistill.data.samples import Inputs, Samples
from kdistill.data.source import UNLABELLED, Source, stratified_pick
from kdistill.errors import KDistillError



@dataclass
class Splits:
    """Index sets over the training source (labelled, transfer, validation) and the test source."""

    labelled_set: Samples
    transfer_set: Samples  # labels replaced by UNLABELLED
    val_set: Samples | None
    test_set: Samples
    # labelled + transfer samples in their original order (transfer labels withheld), so that
    # stages on both see the same inputs whatever the split: teacher outputs can be reused
    pool_set: Samples | None = None
    # the pool's true labels: read only by stages with data 'full', which train a teacher
    pool_labels: torch.Tensor | None = None
    # the first test inputs as they were before preprocessing, to judge the teacher on both
    test_before_preprocess: Inputs | None = None

    def prepared(self, prepare_for) -> "Splits":
        """Every set made ready for the models by ``prepare_for(source)`` (its stored values ->
        model inputs)."""
        sets = {name: getattr(self, name) for name in ("labelled_set", "transfer_set", "val_set", "test_set",
                                                         "pool_set")}
        return Splits(**{k: v.prepared(prepare_for(v.source)) if v is not None else None for k, v in sets.items()},
                      pool_labels=self.pool_labels, test_before_preprocess=self.test_before_preprocess)


def _count(value: float | int, total: int, field: str, bounded: bool = True) -> int:
    """A count, or a fraction of ``total``, checked to lie in ``0..total`` (or, unbounded, to be 0 or more)."""
    n = int(round(value * total)) if isinstance(value, float) and value <= 1 else int(value)
    if n < 0 or (bounded and n > total):
        raise KDistillError(f"data.{field}: {value} is outside 0..{total}; give a count or a fraction.")
    return n


def _draw_val(y: torch.Tensor, n: int, classless: bool, g: torch.Generator, rows: torch.Tensor) -> torch.Tensor:
    """``n`` of ``rows`` (labels ``y``) for validation: stratified, or at random when there are no
    classes to stratify by (nothing drawn, the generator untouched, when ``n`` is 0)."""
    if not n:
        return rows[:0]
    if classless:
        return rows[torch.randperm(len(rows), generator=g)[:n]].sort().values
    return rows[stratified_pick(y, n, g)]


def split(
    train: Source,
    test: Source,
    labelled: float | int,
    val: float | int = 0,
    transfer: float | int | None = None,
    seed: int = 0,
) -> Splits:
    """Split ``train`` into labelled / transfer / validation sets: index sets, nothing copied.

    Rows labelled ``-1`` (``UNLABELLED``) are the user's unlabelled samples: the labelled and
    validation sets are drawn from the other rows only, and they all join the transfer set.

    Args:
        labelled: labelled samples, a count (600) or a fraction (0.01) of the labelled rows, stratified.
        val: held-out labelled samples for choosing hyper-parameters, stratified (token blocks
            without classes: drawn at random from all).
        transfer: how many of the remaining samples form the transfer set (default: all).
        seed: the split depends on this seed alone.
    """
    g = torch.Generator().manual_seed(seed)
    classless = train.tokens and train.num_classes == 0  # token blocks: unlabelled by nature, all eligible
    has_label = torch.ones(len(train), dtype=torch.bool) if classless else train.y != UNLABELLED
    n_known = int(has_label.sum())
    n_lab = _count(labelled, n_known, "labelled", bounded=False)
    n_val = _count(val, n_known, "val", bounded=False)
    if n_lab + n_val > n_known:
        rows = (f"the {n_known} labelled training samples ({len(train) - n_known} more are labelled -1)"
                if n_known < len(train) else f"the {len(train)} training samples")
        raise KDistillError(
            f"data: labelled ({n_lab}) + val ({n_val}) exceed {rows}; lower data.labelled or data.val."
        )
    everything = torch.arange(len(train))
    known = everything[has_label]
    val_idx = _draw_val(train.y[known], n_val, classless, g, known)
    pool = everything[has_label & ~torch.isin(everything, val_idx)]
    lab_idx = pool[stratified_pick(train.y[pool], n_lab, g)] if n_lab else everything[:0]
    transfer_idx = everything[~torch.isin(everything, torch.cat([val_idx, lab_idx]))]
    if transfer is not None:
        n_tr = _count(transfer, len(transfer_idx), "transfer")
        transfer_idx = transfer_idx[torch.randperm(len(transfer_idx), generator=g)[:n_tr]].sort().values
    transfer_set = Samples(train, transfer_idx, torch.full((len(transfer_idx),), UNLABELLED, dtype=torch.long))
    pool_idx = torch.cat([lab_idx, transfer_idx]).sort().values
    pool_labels = train.y[pool_idx].clone()
    is_labelled = torch.zeros(len(train), dtype=torch.bool)
    is_labelled[lab_idx] = True
    pool_y = pool_labels.clone()
    pool_y[~is_labelled[pool_idx]] = UNLABELLED
    return Splits(
        labelled_set=Samples(train, lab_idx),
        transfer_set=transfer_set,
        val_set=Samples(train, val_idx) if n_val else None,
        test_set=Samples(test),
        pool_set=Samples(train, pool_idx, pool_y),
        pool_labels=pool_labels,
    )
