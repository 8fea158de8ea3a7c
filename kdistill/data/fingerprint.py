"""Content hashes that identify a model's weights or a data set, to key cached teacher outputs."""

from __future__ import annotations

import hashlib

import torch


def fingerprint(tensors) -> str:
    """A content hash of tensors (a model's state or a data set held in memory)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def fingerprint_text(*parts) -> str:
    """A hash of text parts (file names, sizes, modification times, a dataset's own fingerprint)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sum(path) -> str:
    """A content hash of a file's bytes (read a MiB at a time): what a cache shard or a checkpoint
    records of itself, to know it again when it is read back."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
