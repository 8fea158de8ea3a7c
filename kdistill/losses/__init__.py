"""Distillation losses, one module per method; importing this package registers them all."""

from kdistill.losses import (  # noqa: F401  (registration)
    at,
    ce,
    distance_kl,
    embed_cosine,
    embed_mse,
    entropy,
    hint,
    kd,
    l2_start,
    ovr,
    prototype_kl,
    residual_smooth,
    scatter,
    vid,
)
from kdistill.losses.registry import LOSSES, build_loss, register

__all__ = ["LOSSES", "build_loss", "register"]
