"""Distillation losses, one module per method; importing this package registers them all."""

from kdistill.losses import (  # noqa: F401  (registration)
    at,
    cc,
    ce,
    crd,
    dist,
    distance_kl,
    dkd,
    embed_cosine,
    embed_mse,
    entropy,
    fsp,
    hint,
    kd,
    l2_start,
    multi_kd,
    nst,
    ovr,
    pkt,
    prototype_kl,
    residual_smooth,
    rkd,
    scatter,
    sp,
    token,
    vid,
)
from kdistill.losses.registry import LOSSES, build_loss, register

__all__ = ["LOSSES", "build_loss", "register"]
