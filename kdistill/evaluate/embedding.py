"""Sentence-embedding students against their teacher: closeness, neighbourhoods, few-label accuracy,
encoding speed and size on disk.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kdistill.closeness import mean_cosine, neighbour_overlap
from kdistill.data.samples import pick
from kdistill.errors import KDistillError, shown
from kdistill.fewshot import few_label_accuracy
from kdistill.models.infer import eval_mode, predict


@torch.no_grad()
def encoding_speed(
    encode: Callable[[list[str]], torch.Tensor], texts: list[str], batch_size: int = 32,
    warmup: int = 1, repeats: int = 1,
) -> float:
    """Sentences a second that ``encode`` turns into embeddings, in batches of ``batch_size``.

    ``warmup`` untimed calls on the first batch come first; the whole of ``texts`` is then encoded
    ``repeats`` times and the median pass is used.
    """
    if not texts:
        raise KDistillError("encoding_speed: no texts given; pass at least one sentence.")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise KDistillError(
            f"encoding_speed: batch_size={batch_size} and repeats={repeats} must be at least 1, "
            f"warmup={warmup} at least 0."
        )
    for _ in range(warmup):
        wait_for(encode(texts[:batch_size]))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            wait_for(encode(texts[i : i + batch_size]))
        times.append(time.perf_counter() - t0)
    return len(texts) / max(statistics.median(times), 1e-12)


def wait_for(out) -> None:
    """Wait for a CUDA tensor's pending work, so that timings cover it."""
    if isinstance(out, torch.Tensor) and out.is_cuda:
        torch.cuda.synchronize(out.device)


def size_on_disk(path: str | Path) -> int:
    """Bytes of a file, or of all files under a folder (links to files not counted)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise KDistillError(f"size_on_disk: {shown(str(path))} is neither a file nor a folder; give a model's path.")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as saved (safetensors adds a small header)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def evaluate_embedders(models: dict, pool_x: torch.Tensor, pool_labels: torch.Tensor, test_x: torch.Tensor,
                       test_labels: torch.Tensor, device, shots=(1, 5, 10, 50), seed: int = 0,
                       max_pool: int = 5000, speed_samples: int = 1024) -> dict:
    """The embedding task's final evaluation of the student (and baseline) against the teacher.

    Few labels a class are drawn from the training pool, whose labels no distillation stage
    read: from the classes with at least ``max(shots)`` pool samples (``classes`` in the
    result), a seeded sample of at most about ``max_pool`` of them. Agreement with the teacher
    is measured on the whole test set, accuracy on its samples of those classes. Speed: sentences a second at batch 32 on ``device``, on the first
    ``speed_samples`` test inputs (tokenised already, so the tokenizer's time is left out).
    A bar for each pass of a model over a set that takes more than a few seconds, where the job
    shows progress (``kdistill.progress``).
    """
    g = torch.Generator().manual_seed(seed)
    # the classes with enough pool samples for the largest draw, at most max_pool samples in all
    classes = [c for c in pool_labels.unique().tolist() if c >= 0 and int((pool_labels == c).sum()) >= max(shots)]
    if len(classes) < 2:
        counts = sorted((int((pool_labels == c).sum()) for c in pool_labels.unique().tolist() if c >= 0), reverse=True)
        raise KDistillError(f"embedding.shots: few-label accuracy draws up to {max(shots)} labelled samples a class "
                            f"from at least 2 classes, but the pool's classes hold {counts[:5]} samples; set "
                            f"embedding.shots to at most {counts[1] if len(counts) > 1 else 0}, or give the run "
                            "more labelled texts.")
    per_class = max(max(shots), max_pool // max(1, len(classes)))
    chosen = torch.cat([members[torch.randperm(len(members), generator=g)[:per_class]]
                        for c in classes for members in [torch.nonzero(pool_labels == c).flatten()]])
    pool_x, pool_labels = pick(pool_x, chosen), pool_labels[chosen]  # a view of Inputs: fetched batch by batch
    labelled = torch.isin(test_labels, torch.tensor(classes, dtype=test_labels.dtype))
    # numbered 0..k-1, so that no class without labels takes part (as an empty prototype)
    renumber = torch.full((int(max(pool_labels.max(), test_labels.max())) + 1,), -1, dtype=torch.long)
    renumber[torch.tensor(classes)] = torch.arange(len(classes))
    pool_labels, test_labels = renumber[pool_labels], renumber[test_labels.clamp_min(0)]
    emb = {role: (predict(m, pool_x, device, 256, f"{role}: labelled pool"),
                  predict(m, test_x, device, 256, f"{role}: test set")) for role, m in models.items()}
    results = {}
    for role, model in models.items():
        pool, query = emb[role]
        report = few_label_accuracy(pool, pool_labels, query[labelled], test_labels[labelled], shots, seed=seed,
                                    methods=("prototype", "logreg"))
        if role != "teacher":  # closeness to the teacher, on the whole test set
            t_query = emb["teacher"][1]
            report["neighbour_overlap@10"] = neighbour_overlap(query, t_query, 10)
            if query.shape[1] == t_query.shape[1]:
                report["mean_cosine"] = mean_cosine(query, t_query)
        items = list(test_x[:speed_samples])
        with eval_mode(model):
            speed = encoding_speed(lambda batch, m=model: m(torch.stack(batch).to(device)), items, batch_size=32)
        results[role] = {**report, "classes": len(classes), "sentences_per_s": speed, "params": sum(p.numel() for p in model.parameters()),
                         "weight_bytes": weight_bytes(model)}
    if "teacher" in results:
        for role in results:
            results[role]["speedup"] = results[role]["sentences_per_s"] / results["teacher"]["sentences_per_s"]
    return results
