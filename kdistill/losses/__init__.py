"""Distillation losses, one module per method; importing this package registers them all."""

from kdistill.losses import ce, hint, kd  # noqa: F401  (registration)
from kdistill.losses.registry import LOSSES, build_loss, register

__all__ = ["LOSSES", "build_loss", "register"]
