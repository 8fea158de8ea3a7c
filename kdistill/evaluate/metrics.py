"""Metrics of a classifier against labels and a teacher, returned as a dict."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.models.infer import eval_mode, predict
from kdistill.models.zoo import count_params


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| x bin share."""
    probs = logits.softmax(-1)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).float()
    bins = torch.clamp((confidence * n_bins).long(), max=n_bins - 1)  # (N,)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.float().mean().item() * abs(
                correct[in_bin].mean().item() - confidence[in_bin].mean().item()
            )
    return ece


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None
) -> dict[str, float]:
    """Top-1 accuracy and ECE; with teacher logits also top-1 agreement and KL(teacher || model).

    Args: logits, teacher_logits: ``(N, K)``; labels: ``(N,)``.
    """
    metrics = {
        "accuracy": (logits.argmax(-1) == labels).float().mean().item(),
        "ece": expected_calibration_error(logits, labels),
    }
    if teacher_logits is not None:
        metrics["agreement"] = (logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()
        metrics["kl_to_teacher"] = F.kl_div(
            logits.log_softmax(-1), teacher_logits.log_softmax(-1), reduction="batchmean", log_target=True
        ).item()
    return metrics


@torch.no_grad()
def cpu_latency(
    model: nn.Module, sample: torch.Tensor, batch_sizes: tuple[int, ...] = (1, 256), min_seconds: float = 0.3
) -> dict[str, float]:
    """Milliseconds per sample on the CPU at each batch size (median of repeated timings).

    Args: sample: one input ``(1, ...)``.
    """
    device = next(model.parameters()).device
    results = {}
    try:
        with eval_mode(model):
            model.cpu()
            for bs in batch_sizes:
                x = sample.cpu().expand(bs, *sample.shape[1:]).contiguous()
                model(x)  # warm-up
                times, start = [], time.perf_counter()
                while time.perf_counter() - start < min_seconds or len(times) < 3:
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                results[f"latency_ms_b{bs}"] = 1000 * sorted(times)[len(times) // 2] / bs
    finally:
        model.to(device)
    return results


def evaluate_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    teacher_logits: torch.Tensor | None = None,
    latency: bool = True,
    logits: torch.Tensor | None = None,
) -> dict[str, float]:
    """All metrics of one model on a test set: accuracy, agreement, KL, ECE, params, latency.

    ``logits``: the model's outputs on ``x`` when already computed (e.g. a cached teacher's).
    """
    logits = predict(model, x, device) if logits is None else logits
    metrics = classification_metrics(logits, y, teacher_logits)
    metrics["params"] = count_params(model)
    if latency:
        metrics.update(cpu_latency(model, x[:1]))
    return metrics
