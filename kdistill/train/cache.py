"""Teacher outputs on disk: computed once, read back memory-mapped while the student trains.

A cache is a folder named by a key: the fingerprints of the teacher's weights and of the
inputs, plus the augmentation and the number of views. It holds, for every tapped output,
shards of ``(samples, views, ...)`` arrays in half precision (``.npy``, memory-mapped on
read), the augmentation parameters of every view (``params.npy``, ``(N, V, 3)``), and
``meta.json``, written last: a folder without it is an unfinished build and is rebuilt.
``meta.json`` records every file's size and checksum (blake2b of its bytes); a process checks
each file once, when it opens the cache, before it maps it. A cache whose files or
``meta.json`` do not match (a shard overwritten or cut short, ``meta.json`` edited, or a cache
written before checksums were recorded) is damaged: ``build_cache`` says so in a warning and
builds it again, as it would a cache it has never seen (it is the teacher's outputs, so
rebuilding loses nothing but time); ``TeacherCache`` alone refuses it in one line.

With random augmentation the cache holds ``views`` augmented views of every sample;
training draws one of them per sample and step and shows the student that same view, so
teacher and student always see the same image (consistent teaching: Beyer et al. 2022,
"Knowledge distillation: a good teacher is patient and consistent"; FKD, Shen and Xing 2022).

``topk``: keep only the k largest logits of each view. The others are replaced by one value
chosen so that, at temperature 1, the k kept classes have exactly their probabilities and the
remaining mass is spread evenly over the other classes. At another temperature, or for a
loss that reads the order of the small logits, this is an approximation: the tail's shape is
lost, only its total mass at T = 1 is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdistill import distributed, progress
from kdistill.data.augment import draw_shift_flip, shift_flip
from kdistill.data.fingerprint import file_sum, fingerprint
from kdistill.data.samples import fingerprint_of, pick
from kdistill.errors import KDistillError, KDistillWarning, shown
from kdistill.models.infer import forward_batches
from kdistill.models.taps import OUTPUT

SHARD = 8192  # samples a shard
VERSION = 1


def cache_key(teacher_fp: str, data_fp: str, augment: dict, views: int, seed: int, topk: int | None,
              dtype: str) -> str:
    """The folder name of a cache: changes whenever anything that shapes its content does."""
    text = json.dumps([VERSION, teacher_fp, data_fp, augment, views, seed, topk, dtype], sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _file(name: str) -> str:
    return name.replace("/", "_").replace(":", "__")


def compress_logits(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of ``logits (..., K)``: values ``(..., k)``, indices ``(..., k)`` and the shared
    value of the other logits ``(...,)`` (see the module docstring)."""
    n = logits.shape[-1]
    values, indices = logits.float().topk(k, dim=-1)
    log_z = torch.logsumexp(logits.float(), dim=-1)  # (...,)
    kept = torch.logsumexp(values, dim=-1)
    rest_mass = (1 - torch.exp(kept - log_z)).clamp_min(1e-12)
    rest = log_z + torch.log(rest_mass / max(1, n - k))
    return values, indices, rest


def expand_logits(values: torch.Tensor, indices: torch.Tensor, rest: torch.Tensor, n: int) -> torch.Tensor:
    """Full logits ``(..., n)`` from ``compress_logits``' output."""
    full = rest.unsqueeze(-1).expand(*rest.shape, n).clone()
    return full.scatter(-1, indices.long(), values.float())


class CacheDamaged(KDistillError):
    """A cache whose files do not match its ``meta.json``: ``build_cache`` builds it again."""

    def __init__(self, folder: Path, problem: str):
        self.folder, self.problem = folder, problem
        super().__init__(f"cache: {problem}; delete {folder} and build it again (kdistill cache RECIPE, or the "
                         "next run builds it)")


# files checked this process, by (path, size, modification time): each is read in full once
_CHECKED: set[tuple[str, int, int]] = set()


def _short(value, limit: int = 60) -> str:
    text = str(value).strip().splitlines()[0] if str(value).strip() else type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_meta(folder: Path) -> dict:
    """``meta.json`` of the cache in ``folder``, its keys and types checked (CacheDamaged if not)."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CacheDamaged(folder, f"{path.name} in {folder} cannot be read ({_short(err)})") from None
    wanted = {"n": int, "views": int, "shard": int, "taps": dict, "files": dict, "augment": dict, "bytes": int}
    wrong = [k for k, kind in wanted.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), kind)]
    if not wrong and not (meta["n"] >= 0 and meta["views"] >= 1 and meta["shard"] >= 1):
        wrong = ["n, views or shard"]
    if not wrong and not all(isinstance(meta.get(k), (int, type(None))) for k in ("topk", "classes")):
        wrong = ["topk or classes"]
    shards = math.ceil(meta["n"] / meta["shard"]) if not wrong else 0
    if not wrong and not all(isinstance(fs, list) and len(fs) == shards and all(
            isinstance(f, str) and f and Path(f).name == f for f in fs) for fs in meta["files"].values()):
        wrong = ["files"]
    if not wrong and not set(meta["taps"]) <= set(meta["files"]) | {OUTPUT}:
        wrong = ["taps"]
    if wrong:
        raise CacheDamaged(folder, f"{path.name} in {folder} lacks a valid {', '.join(wrong)}")
    if not isinstance(meta.get("sums"), dict):
        raise CacheDamaged(folder, f"{folder} was written before caches recorded checksums, so it cannot be "
                                   "checked")
    return meta


def _check_file(folder: Path, name: str, meta: dict) -> None:
    """``name`` in ``folder`` has the size and checksum ``meta`` records (read once a process)."""
    path = folder / name
    want = meta["sums"].get(name)
    if not isinstance(want, list) or len(want) != 2:
        raise CacheDamaged(folder, f"meta.json in {folder} records no checksum of {name}")
    try:
        stat = path.stat()
    except OSError as err:
        raise CacheDamaged(folder, f"{name} in {folder} cannot be read ({_short(err.strerror or err)})") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _CHECKED:
        return
    if stat.st_size != want[0]:
        raise CacheDamaged(folder, f"{name} in {folder} is {stat.st_size} bytes, meta.json records {want[0]} "
                                   "(cut short or overwritten)")
    try:
        got = file_sum(path)
    except OSError as err:
        raise CacheDamaged(folder, f"{name} in {folder} cannot be read ({_short(err.strerror or err)})") from None
    if got != want[1]:
        raise CacheDamaged(folder, f"{name} in {folder} does not match its checksum in meta.json (overwritten "
                                   "or damaged)")
    _CHECKED.add(key)


class TeacherCache:
    """A built cache, opened for reading. ``get(index, view)`` gives the taps of those samples.

    Opening it checks every file against the size and checksum ``meta.json`` records (once a
    process) and raises CacheDamaged, one line, when one differs."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise KDistillError(f"cache: {self.folder} is not a finished cache (no meta.json); build it again.")
        self.meta = meta = _read_meta(self.folder)
        self.n, self.views, self.classes = meta["n"], meta["views"], meta.get("classes")
        self.params = torch.from_numpy(self._load("params.npy", (self.n, self.views)))  # (N, V, 3) int16
        size = meta["shard"]
        self._shards = {name: [self._load(f, (min(size, self.n - s * size), self.views), mmap=True)
                               for s, f in enumerate(files)]
                        for name, files in meta["files"].items()}

    def _load(self, name: str, rows_views: tuple[int, int], mmap: bool = False) -> np.ndarray:
        """The array ``name``, checked, whose first two dimensions must be ``rows_views``."""
        _check_file(self.folder, name, self.meta)
        try:
            arr = np.load(self.folder / name, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as err:
            raise CacheDamaged(self.folder, f"{name} in {self.folder} cannot be read ({_short(err)})") from None
        if arr.shape[:2] != rows_views:
            raise CacheDamaged(self.folder, f"{name} in {self.folder} holds {tuple(arr.shape[:2])} samples x views, "
                                            f"meta.json says {rows_views}")
        return arr

    @property
    def names(self) -> list[str]:
        return list(self.meta["taps"])

    def _read(self, name: str, index: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        shards = self._shards[name]
        index, view = index.cpu().numpy(), view.cpu().numpy()
        size = self.meta["shard"]
        shard, row = index // size, index % size
        out = np.empty((len(index), *shards[0].shape[2:]), dtype=shards[0].dtype)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = shards[s][row[sel], view[sel]]
        return torch.from_numpy(out)

    def get(self, names: list[str], index: torch.Tensor, view: torch.Tensor | None = None,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Outputs of the taps ``names`` for samples ``index (B,)`` in views ``view (B,)`` (default 0), float32."""
        view = torch.zeros_like(index) if view is None else view
        missing = [n for n in names if n not in self.meta["taps"]]
        if missing:
            raise KDistillError(f"cache: {self.folder} holds no {missing}; it has {self.names}. Build it again.")
        out = {}
        for name in names:
            if name == OUTPUT and self.meta["topk"]:
                values, indices, rest = (self._read(f"{OUTPUT}.{p}", index, view) for p in ("values", "indices", "rest"))
                out[name] = expand_logits(values, indices, rest.squeeze(-1), self.classes)
            else:
                out[name] = self._read(name, index, view).float()
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def _write_shard(teacher: nn.Module, names: list[str], x: torch.Tensor, params: torch.Tensor | None, shift: int,
                 folder: Path, s: int, device, topk: int | None, dtype: str, batch_size: int, info: dict,
                 bar=None) -> None:
    """Shard ``s``: the taps ``names`` of every view of the inputs ``x (S, ...)`` (views drawn as
    ``params (S, V, 3)``; None: one view, unaugmented) as ``(S, V, ...)`` arrays in ``folder``;
    ``info`` gets each array's trailing shape and the number of classes; ``bar``: a progress bar
    to advance by the samples done."""
    np_dtype = np.float16 if dtype == "float16" else np.float32
    chunks: dict[str, list[np.ndarray]] = {}
    augmented = params is not None
    params = params if augmented else torch.zeros(len(x), 1, 3, dtype=torch.int16)
    for v in range(params.shape[1]):
        view = params[:, v]
        feats = forward_batches(
            teacher, x, device, names, owner="teacher", batch_size=batch_size, bar=bar,
            transform=(lambda xb, where, view=view: shift_flip(xb, view[where], shift)) if augmented else None,
            each=lambda f: {n: f[n].float().cpu() for n in names})
        for n, t in feats.items():
            if n == OUTPUT:
                info["classes"] = t.shape[-1]
            if n == OUTPUT and topk:
                values, indices, rest = compress_logits(t, min(topk, t.shape[-1]))
                for suffix, arr in (("values", values), ("indices", indices.int()), ("rest", rest[:, None])):
                    chunks.setdefault(f"{OUTPUT}.{suffix}", []).append(
                        arr.numpy().astype(np_dtype if suffix != "indices" else np.int32))
            else:
                chunks.setdefault(n, []).append(t.numpy().astype(np_dtype))
    for n, per_view in chunks.items():
        arr = np.stack(per_view, axis=1)  # (S, V, ...)
        np.save(folder / f"{_file(n)}.{s:04d}.npy", arr)
        info[n] = list(arr.shape[2:])


@torch.no_grad()
def build_cache(teacher: nn.Module, names: list[str], x: torch.Tensor, root: str | Path, device,
                augment: dict | None = None, views: int = 1, seed: int = 0, topk: int | None = None,
                dtype: str = "float16", batch_size: int = 512, field: str = "cache.dir") -> TeacherCache:
    """Run the frozen ``teacher`` over ``x`` (``views`` augmented views of each sample when
    ``augment`` shifts or flips) and store the taps ``names`` under ``root``; reuse the folder
    when the same teacher, data, augmentation and taps were cached before and its files are
    whole (a damaged one is built again, with a warning). ``field``: the recipe field naming
    ``root``, for the message when it cannot be written. Where the job shows progress
    (``kdistill.progress``): one bar over every shard and view, or on no terminal a line a shard.

    Under torchrun every process calls this: each computes and writes its own shards (shard
    ``s`` on rank ``s mod world``), and rank 0 writes the metadata once all are written.

    Returns: the opened cache.
    """
    augment = {k: v for k, v in (augment or {}).items() if v}
    seed = seed if augment else 0  # the seed draws the augmented views alone: runs of other seeds share the cache
    if not augment and views != 1:
        raise KDistillError(f"cache.views: {views} views without augmentation are the same image; use views: 1.")
    teacher_fp, data_fp = fingerprint(teacher.state_dict().values()), fingerprint_of(x)
    folder = Path(root) / cache_key(teacher_fp, data_fp, augment, views, seed, topk, dtype)
    partial = folder.with_name(folder.name + ".incomplete")
    ready = _reusable(folder, names) if distributed.is_main() else False
    ready = distributed.from_main(float(ready), device) > 0.5  # rank 0 checked the files: every rank agrees
    try:
        if not ready and distributed.is_main():
            for old in (folder, partial):  # unfinished, damaged, or lacking taps now asked for: rebuilt whole
                if old.exists():
                    shutil.rmtree(old)
            partial.mkdir(parents=True)
        distributed.barrier()
        if not ready:
            _build(teacher, names, x, partial, device, augment, views, seed, topk, dtype, batch_size,
                   {"version": VERSION, "teacher": teacher_fp, "data": data_fp})
    except OSError as err:  # a cache.dir that cannot be written (read-only, a file in the way, a full disk)
        if distributed.is_main():
            shutil.rmtree(partial, ignore_errors=True)
        raise KDistillError(f"{field}: cannot write the teacher's outputs into {_short(root, 80)} "
                            f"({_short(err.strerror or err)}); set cache.dir to a folder you can write, or make "
                            "that one writable") from None
    return TeacherCache(folder)


def _reusable(folder: Path, names: list[str]) -> bool:
    """Whether the finished cache ``folder`` holds the taps ``names`` and its files are whole
    (a damaged one: False, with a warning that it is built again)."""
    if not (folder / "meta.json").is_file():
        return False
    try:
        return set(names) <= set(TeacherCache(folder).names)
    except CacheDamaged as err:
        warnings.warn(f"cache: {err.problem}; building it again", KDistillWarning, stacklevel=2)
        return False


def _build(teacher: nn.Module, names: list[str], x: torch.Tensor, partial: Path, device, augment: dict, views: int,
           seed: int, topk: int | None, dtype: str, batch_size: int, meta: dict) -> None:
    """Every rank's shards written into ``partial``, then (rank 0) the views, ``meta.json`` and
    the rename to the final folder."""
    g = torch.Generator().manual_seed(seed)  # the same views on every rank
    shift = int(augment.get("shift", 0))
    params = torch.stack([draw_shift_flip(len(x), shift, bool(augment.get("flip", False)), g)
                          for _ in range(views)], dim=1)  # (N, V, 3)
    starts = list(range(0, len(x), SHARD))
    info: dict = {}  # shapes, classes (the same on every rank)
    mine = range(distributed.rank(), len(starts), distributed.world_size())
    with progress.bar(sum(min(SHARD, len(x) - starts[s]) for s in mine) * views, "teacher outputs (cache)") as bar:
        for s in mine:
            start, stop = starts[s], min(starts[s] + SHARD, len(x))
            _write_shard(teacher, names, pick(x, slice(start, stop)), params[start:stop] if augment else None, shift,
                         partial, s, device, topk, dtype, batch_size, info, bar)
            if progress.enabled() and bar.disable:  # no terminal for a bar (a log file): a line a shard
                print(f"[cache] {stop}/{len(x)} samples x {views} views", flush=True)
    distributed.barrier()  # every rank's shards are written
    if distributed.is_main():
        np.save(partial / "params.npy", params.numpy())
        meta.update({"n": len(x), "views": views, "shard": SHARD, "augment": augment, "seed": seed, "topk": topk,
                     "dtype": dtype})
        _write_meta(partial, meta, names, len(starts), info)  # written last: the cache is complete
        partial.rename(partial.with_name(partial.name.removesuffix(".incomplete")))
    distributed.barrier()


def _write_meta(partial: Path, meta: dict, names: list[str], shards: int, info: dict) -> None:
    """``meta.json`` of a cache whose ``shards`` shards are written in ``partial``: ``meta`` plus
    the stored files, the classes, each tap's shape, the bytes on disk and each file's size and
    checksum (read back from the disk: under torchrun other ranks wrote some of them)."""
    topk = meta["topk"]
    stored = [f"{OUTPUT}.{p}" for p in ("values", "indices", "rest")] if topk else []
    stored += [n for n in names if not (topk and n == OUTPUT)]
    files = {n: [f"{_file(n)}.{s:04d}.npy" for s in range(shards)] for n in stored}
    classes = info.get("classes") or np.load(partial / files[stored[0]][0], mmap_mode="r").shape[-1]
    taps = {n: info.get(n) or list(np.load(partial / files[n][0], mmap_mode="r").shape[2:]) for n in names if n in files}
    if topk:
        taps[OUTPUT] = [classes]
    every = ["params.npy", *(f for fs in files.values() for f in fs)]
    sums = {f: [(partial / f).stat().st_size, file_sum(partial / f)] for f in every}
    meta.update(classes=classes, taps=taps, files=files,
                bytes=sum(sums[f][0] for fs in files.values() for f in fs), sums=sums)
    (partial / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf8")
    final = partial.with_name(partial.name.removesuffix(".incomplete")).resolve()
    for f, (size, _) in sums.items():  # checked as they were hashed: opening the cache here reads none again
        _CHECKED.add((str(final / f), size, (partial / f).stat().st_mtime_ns))


@torch.no_grad()
def verify_cache(cache: TeacherCache, teacher: nn.Module, x: torch.Tensor, device, samples: int = 256,
                 seed: int = 0, rtol: float = 1e-2, atol: float = 1e-2) -> dict[str, float]:
    """Compare ``samples`` cached outputs (random samples and views) with the live teacher's.

    Returns the largest absolute difference of each tap; raises KDistillError past
    ``atol + rtol * |live|`` (half precision rounds at about 1e-3 relative).
    """
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(cache.n, generator=g)[:samples]
    view = torch.randint(cache.views, (len(index),), generator=g)
    names = cache.names
    stored = cache.get(names, index, view)
    shift = int(cache.meta["augment"].get("shift", 0)) if cache.meta["augment"] else 0
    views = cache.params[index, view]
    live = forward_batches(teacher, x[index], device, names, owner="teacher", batch_size=len(index),
                           transform=(lambda xb, where: shift_flip(xb, views[where], shift)) if cache.meta["augment"]
                           else None, each=lambda f: {k: v.float().cpu() for k, v in f.items()})
    worst = {}
    for n in names:
        if n == OUTPUT and cache.meta["topk"]:  # only the kept logits are exact
            values, indices = live[n].topk(cache.meta["topk"], dim=-1)
            a, b = stored[n].gather(-1, indices), values
        else:
            a, b = stored[n], live[n]
        worst[n] = (a - b).abs().max().item()
        bad = ((a - b).abs() > atol + rtol * b.abs()).any().item()
        if bad or math.isnan(worst[n]):
            raise KDistillError(f"cache --verify: tap {shown(n)} differs from the live teacher by up to {worst[n]:.3g} "
                                f"on {len(index)} samples; the cache at {cache.folder} is stale or corrupt: delete it.")
    return worst
