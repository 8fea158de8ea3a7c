"""Data bigger than memory: the demo's distillation epoch read from each data source, at 70,000
and at 700,000 samples, with 0, 1 and 2 DataLoader workers (issue 15).

    python bench/data.py             # at most about 35 min on 2 CPU cores (data written once, then reused)
    python bench/data.py --quick     # a smoke run of every part in about 3 min

Fashion-MNIST's 60,000 training and 10,000 test images are written out (once, under ``--work``)
as (b) a PNG image folder, (c) a Hugging Face ``save_to_disk`` dataset (PNG bytes in an
``Image`` column, a ``ClassLabel``) and (d) ``.npy`` arrays; and again 10x larger (the training
part repeated 10 times: 700,000 samples). (a) is the built-in source, held in memory.

Every configuration runs in a fresh process: the demo's distillation stage (student, batch,
KD + hint loss on the transfer set) from a disk cache of the demo teacher's outputs, built in
an untimed first pass. The parent samples the anonymous resident memory (``RssAnon``) of that
process and all its descendants (the DataLoader workers) every 50 ms. A second part times
224-px JPEG decoding with random crops and flips through ``kdistill.data.loader.BatchLoader``.
Writes bench/results/data.md (``--quick``: ``<work>/data_quick.md``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import write_lines  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist")
DEMO = ROOT / "kdistill" / "recipes" / "demo.yaml"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REPEAT = 10  # the large copies: the training part this many times
SOURCES = {  # key -> (label, what is read, large copy)
    "a": ("(a) in memory (fashion_mnist)", "fashion_mnist", False),
    "b": ("(b) PNG folder (image_folder)", "png", False),
    "c": ("(c) HF dataset (hf_dataset)", "hf", False),
    "d": ("(d) .npy (npy)", "npy", False),
    "b10": ("(b) PNG folder, 10x", "png10", True),
    "c10": ("(c) HF dataset, 10x", "hf10", True),
    "d10": ("(d) .npy, 10x", "npy10", True),
}
WORKERS = (0, 1, 2)
PROCS = 2  # processes that write the data


# -- the data on disk ----------------------------------------------------------------------------

def fashion_mnist(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_train`` / ``n_test`` Fashion-MNIST images ``(N, 1, 28, 28)`` uint8 and labels int64."""
    from kdistill.data.idx import read_idx

    def part(images: str, labels: str, n: int):
        x = read_idx(FMNIST / images)[:n, None].copy()
        return x, read_idx(FMNIST / labels)[:n].astype(np.int64)

    return (*part("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", n_train),
            *part("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", n_test))


def png_name(split: str, label: int, i: int, copy: int | None = None) -> str:
    """The file of sample ``i`` (of copy ``copy`` in the large folder) under an image folder."""
    return f"{split}/{label}/{i:05d}.png" if copy is None else f"{split}/{label}/{i:05d}-{copy}.png"


def _write_pngs(job: tuple[str, list[str], np.ndarray]) -> int:
    """Encode ``images (n, 1, H, W)`` as PNG files ``names`` under ``folder``; returns the bytes written."""
    from PIL import Image

    folder, names, images = job
    total = 0
    for name, image in zip(names, images):
        buf = io.BytesIO()
        Image.fromarray(image[0]).save(buf, format="PNG")
        (Path(folder) / name).write_bytes(buf.getvalue())
        total += buf.tell()
    return total


def _complete(folder: Path, tag: str) -> bool:
    """Whether ``folder`` was written completely, for the sizes ``tag`` names."""
    marker = folder / ".complete"
    return marker.is_file() and marker.read_text().strip() == tag


def sizes(train, test) -> str:
    """The tag of a finished data folder: the sizes of the data it was written from."""
    return f"{len(train)} train, {len(test)} test"


def _start(folder: Path) -> Path:
    """An empty ``folder.partial`` to write into (renamed to ``folder`` by ``_finish``)."""
    partial = folder.with_name(folder.name + ".partial")
    for old in (folder, partial):
        if old.exists():
            shutil.rmtree(old)
    partial.mkdir(parents=True)
    return partial


def _finish(partial: Path, folder: Path, tag: str) -> None:
    (partial / ".complete").write_text(tag + "\n")
    partial.rename(folder)


def write_png_folder(folder: Path, data) -> None:
    """(b): ``train/<class>/*.png`` and ``test/<class>/*.png``, written by ``PROCS`` processes."""
    xtr, ytr, xte, yte = data
    out = _start(folder)
    jobs = []
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        for c in range(10):
            (out / split / str(c)).mkdir(parents=True)
        names = [png_name(split, int(c), i) for i, c in enumerate(y)]
        step = max(1, -(-len(x) // (4 * PROCS)))
        jobs += [(str(out), names[i:i + step], x[i:i + step]) for i in range(0, len(x), step)]
    with Pool(PROCS) as pool:
        pool.map(_write_pngs, jobs)
    _finish(out, folder, sizes(ytr, yte))


def link_png_folder(base: Path, folder: Path, ytr: np.ndarray, yte: np.ndarray) -> None:
    """(b) 10x: every training file hard-linked under ``REPEAT`` names; the test files once."""
    out = _start(folder)
    for split in ("train", "test"):
        for c in range(10):
            (out / split / str(c)).mkdir(parents=True)
    for i, c in enumerate(ytr):
        src = base / png_name("train", int(c), i)
        for k in range(REPEAT):
            os.link(src, out / png_name("train", int(c), i, k))
    for i, c in enumerate(yte):
        os.link(base / png_name("test", int(c), i), out / png_name("test", int(c), i))
    _finish(out, folder, sizes(ytr, yte))


def write_hf(folder: Path, png: Path, ytr: np.ndarray, yte: np.ndarray) -> None:
    """(c): a DatasetDict (train, test) saved with ``save_to_disk``; ``image`` holds the PNG files'
    bytes (a ``datasets.Image`` feature), ``label`` a ``ClassLabel``."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})

    def part(split: str, y: np.ndarray):
        images = [{"bytes": (png / png_name(split, int(c), i)).read_bytes(), "path": None} for i, c in enumerate(y)]
        return datasets.Dataset.from_dict({"image": images, "label": y.tolist()}, features=features)

    out = _start(folder)
    datasets.disable_progress_bars()
    datasets.DatasetDict(train=part("train", ytr), test=part("test", yte)).save_to_disk(str(out / "data"))
    _finish(out, folder, sizes(ytr, yte))


def write_hf_large(folder: Path, base: Path) -> None:
    """(c) 10x: the training split concatenated ``REPEAT`` times, the test split as it is."""
    import datasets

    datasets.disable_progress_bars()
    dd = datasets.load_from_disk(str(base / "data"))
    out = _start(folder)
    big = datasets.concatenate_datasets([dd["train"]] * REPEAT)
    datasets.DatasetDict(train=big, test=dd["test"]).save_to_disk(str(out / "data"))
    _finish(out, folder, (base / ".complete").read_text().strip())


def write_npy(folder: Path, data, repeat: int = 1) -> None:
    """(d): ``train_x.npy`` uint8 ``(N, 1, 28, 28)``, ``train_y.npy`` int64 and the same for test;
    the training part ``repeat`` times (written through a memory map, a copy at a time)."""
    xtr, ytr, xte, yte = data
    out = _start(folder)
    big = np.lib.format.open_memmap(out / "train_x.npy", mode="w+", dtype=np.uint8, shape=(repeat * len(xtr), *xtr.shape[1:]))
    for k in range(repeat):
        big[k * len(xtr):(k + 1) * len(xtr)] = xtr
    big.flush()
    del big
    np.save(out / "train_y.npy", np.tile(ytr, repeat))
    np.save(out / "test_x.npy", xte)
    np.save(out / "test_y.npy", yte)
    _finish(out, folder, sizes(ytr, yte))


def prepare(work: Path, n_train: int, n_test: int) -> dict[str, float]:
    """Write whatever of the six data sets is missing under ``work``; returns seconds per part."""
    data = None
    spent = {}
    steps = [("png", lambda: write_png_folder(work / "png", data)),
             ("png10", lambda: link_png_folder(work / "png", work / "png10", data[1], data[3])),
             ("hf", lambda: write_hf(work / "hf", work / "png", data[1], data[3])),
             ("hf10", lambda: write_hf_large(work / "hf10", work / "hf")),
             ("npy", lambda: write_npy(work / "npy", data)),
             ("npy10", lambda: write_npy(work / "npy10", data, REPEAT))]
    for name, step in steps:
        if _complete(work / name, sizes(range(n_train), range(n_test))):
            continue
        if data is None:
            data = fashion_mnist(n_train, n_test)
        start = time.perf_counter()
        step()
        spent[name] = time.perf_counter() - start
        print(f"wrote {work / name} in {spent[name]:.0f} s", flush=True)
    return spent


# -- synthetic 224-px JPEGs ----------------------------------------------------------------------

def _write_jpegs(job: tuple[str, int, int, int]) -> None:
    """JPEG files ``start..stop`` (quality 90) of random smooth content, sides drawn in 224..320 px."""
    from PIL import Image

    folder, start, stop, seed = job
    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        w, h = (int(v) for v in rng.integers(224, 321, size=2))
        coarse = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        image.save(Path(folder) / str(i % 10) / f"{i:06d}.jpg", quality=90)


def write_jpeg_folder(folder: Path, count: int, procs: int = PROCS, seed: int = 0) -> None:
    """``count`` JPEGs in 10 class folders under ``folder`` (kept if already complete)."""
    if _complete(folder, str(count)):
        return
    out = _start(folder)
    for c in range(10):
        (out / str(c)).mkdir()
    step = max(1, -(-count // (8 * procs)))
    with Pool(procs) as pool:
        pool.map(_write_jpegs, [(str(out), i, min(i + step, count), seed) for i in range(0, count, step)])
    _finish(out, folder, str(count))


# -- one configuration, in a fresh process -----------------------------------------------------

def data_section(key: str, work: Path) -> dict:
    """The recipe's ``data`` section that reads source ``key`` (see SOURCES)."""
    where = SOURCES[key][1]
    if where == "fashion_mnist":
        return {"source": "fashion_mnist"}
    folder = work / where
    if where.startswith("png"):
        return {"source": "image_folder", "path": str(folder), "images": {"mode": "grayscale"}}
    if where.startswith("hf"):
        return {"source": "hf_dataset", "path": str(folder / "data"), "images": {"mode": "grayscale"}}
    return {"source": "npy", "path": str(folder / "train_x.npy"),
            "files": {"labels": str(folder / "train_y.npy"), "test_path": str(folder / "test_x.npy"),
                      "test_labels": str(folder / "test_y.npy")}}


def bench_recipe(key: str, work: Path, workers: int, samples: int | None, epochs: int) -> dict:
    """The demo's distillation stage (its teacher, student, batch size and losses) on source
    ``key``, from a disk cache under ``work/cache``; ``samples``: the transfer set's size."""
    import yaml

    demo = yaml.safe_load(DEMO.read_text())
    teacher = {**demo["teacher"], "weights": str(DEMO.parent / demo["teacher"]["weights"])}
    stage = next(s for s in demo["stages"] if s["data"] == "transfer")
    stage = {**stage, "epochs": epochs, "eval_every": epochs, "cache": {"dir": str(work / "cache")}}
    data = {**data_section(key, work), "labelled": demo["data"]["labelled"],
            "val": 100,  # the end-of-stage evaluation on 100 images, not on the 10,000 test images
            "normalize": "teacher", "loader": {"workers": workers}}
    if samples:
        data["transfer"] = samples
    return {"name": "bench-data", "seed": demo["seed"], "device": "cpu", "latency": False,
            "checkpoint": {"enabled": False}, "data": data, "teacher": teacher, "student": demo["student"],
            "stages": [stage]}


def measure(recipe: dict) -> dict:
    """Build the recipe and train its stage as ``kdistill.run`` does (``build_pipeline`` then
    ``fit``; no final evaluation or report). Each epoch is timed around the loop's ``run_epoch``,
    and its steady part from the first batch the loader hands the loop to the last: the workers'
    start is left out, and ``n - 1`` whole fetch-and-step cycles are timed."""
    import torch

    from kdistill.data.loader import BatchLoader
    from kdistill.pipeline import build_pipeline
    from kdistill.recipe import load_recipe
    from kdistill.rundir import NullRunDir
    from kdistill.train import loop
    from kdistill.train.fit import fit

    epochs, handed = [], []
    inner_epoch, inner_run = BatchLoader.epoch, loop.run_epoch

    def batches(self, *args, **kwargs):
        for item in inner_epoch(self, *args, **kwargs):
            handed.append((time.perf_counter(), len(item[0])))
            yield item

    def timed(t, epoch, hooks):
        handed.clear()
        wall, start = time.time(), time.perf_counter()
        inner_run(t, epoch, hooks)
        seconds = time.perf_counter() - start
        (first, _), (last, size) = handed[0], handed[-1]
        epochs.append({"start": wall, "end": time.time(), "seconds": seconds, "samples": len(t.x),
                       "steady_s": last - first, "steady_samples": len(t.x) - size, "first_batch_s": first - start})

    BatchLoader.epoch, loop.run_epoch = batches, timed  # the loop reaches both through their modules
    started = time.perf_counter()
    pipeline = build_pipeline(load_recipe(recipe))
    built, built_wall = time.perf_counter() - started, time.time()
    fit(pipeline, NullRunDir())
    return {"epochs": epochs, "load_s": built, "setup_s": epochs[0]["start"] - built_wall,
            "train": pipeline.data_info["train"], "torch_threads": torch.get_num_threads()}


def build_cache(recipe: dict) -> dict:
    """The stage's disk cache, built as ``kdistill cache`` builds it (untimed by the bench)."""
    from kdistill.precompute import cache_recipe

    start = time.perf_counter()
    done = cache_recipe(recipe, progress=False)
    return {"seconds": time.perf_counter() - start, "bytes": sum(d["bytes"] for d in done)}


def measure_jpeg(folder: str, workers: int, images: int, batch: int, epoch: int) -> dict:
    """Decoded and augmented 224-px images a second through ``BatchLoader``: a random resized crop
    and a flip of every image (a training view), after a warm-up batch per worker."""
    import torch

    from kdistill.data.image_folder import load_image_folder_source
    from kdistill.data.loader import BatchLoader
    from kdistill.data.samples import Inputs
    from kdistill.recipe import DataSpec

    spec = DataSpec(source="image_folder", path=folder,
                    images={"size": 256, "crop": 224, "random_crop": True, "flip": True})
    train, _ = load_image_folder_source(folder, spec)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
    warm = max(1, workers) * batch
    loader = BatchLoader(Inputs(train), train.y, workers=workers)
    for _ in loader.epoch(list(order[:warm].split(batch)), view=(0, 2 * epoch)):  # workers started
        pass
    timed = list(order[warm:warm + images].split(batch))
    start, seen = time.perf_counter(), 0
    for _, x, _ in loader.epoch(timed, view=(0, 2 * epoch + 1)):
        seen += len(x)
    seconds = time.perf_counter() - start
    shape = list(x.shape[1:])
    loader.close()
    return {"images": seen, "seconds": seconds, "shape": shape}


# -- the parent: fresh processes, memory sampled from /proc -------------------------------------

def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _field_kb(path: str, name: str) -> int:
    """A ``name: <n> kB`` line of a /proc file, in kB (0 if the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class MemoryWatch:
    """Samples, every ``every`` seconds, the summed ``RssAnon`` (and every 4th time ``Pss_Anon``)
    of a process and its descendants, as ``(time.time(), rss_kb, pss_kb or None, processes)``."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every, self.samples = pid, every, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._done.is_set():
            pids = _tree(self.pid)
            rss = sum(_field_kb(f"/proc/{p}/status", "RssAnon:") for p in pids)
            pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss_Anon:") for p in pids) if n % 4 == 0 else None
            if rss:
                self.samples.append((time.time(), rss, pss, len(pids)))
            n += 1
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf"), pss: bool = False) -> float:
        """The largest sum in ``[start, end]``, in MB (0 without a sample there)."""
        values = [s[2 if pss else 1] for s in self.samples if start <= s[0] <= end and s[2 if pss else 1] is not None]
        return max(values, default=0) / 1024


STEAL_MAX = 0.05  # a run whose CPU time the hypervisor took more than this share of is not quiet


def cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``'s first line: user .. steal ..)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time between two readings that the hypervisor gave other
    guests (``steal``, the 8th counter): time this run wanted and could not have."""
    delta = [b - a for a, b in zip(before, after)]
    return delta[7] / max(sum(delta[:8]), 1) if len(delta) > 7 else 0.0


def child(mode: str, *args) -> dict:
    """Run ``mode`` (measure, cache, jpeg) with ``args`` in a fresh process; its result, memory
    and the CPU time stolen from the machine meanwhile."""
    ticks = cpu_times()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps([mode, *args])], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = MemoryWatch(proc.pid)
    started = time.perf_counter()
    out, err = proc.communicate()
    watch.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {args[:1]} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    result["steal"] = steal_share(ticks, cpu_times())
    result["peak_run_mb"] = watch.peak()
    if mode == "measure":
        first, last = result["epochs"][0], result["epochs"][-1]
        result["peak_train_mb"] = watch.peak(first["start"], last["end"])
        result["pss_train_mb"] = watch.peak(first["start"], last["end"], pss=True)
        result["processes"] = max((s[3] for s in watch.samples if first["start"] <= s[0] <= last["end"]), default=0)
    return result


# -- the report ----------------------------------------------------------------------------------

def med(values) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(rows: list[dict]) -> dict:
    """Median over the repeats of each (source, workers): samples/s, epoch s, memory, wall."""
    cells = {}
    for r in rows:
        cells.setdefault((r["source"], r["workers"]), []).append(r)
    out = {}
    for key, rs in cells.items():
        timed = [r["epochs"][-1] for r in rs]
        out[key] = {"n": len(rs), "rate": med([e["steady_samples"] / e["steady_s"] for e in timed]),
                    "epoch_rate": med([e["samples"] / e["seconds"] for e in timed]),
                    "epoch_s": med([e["seconds"] for e in timed]), "samples": timed[0]["samples"],
                    "first_batch_s": med([e["first_batch_s"] for e in timed]),
                    "peak_train": med([r["peak_train_mb"] for r in rs]), "pss_train": med([r["pss_train_mb"] for r in rs]),
                    "peak_run": med([r["peak_run_mb"] for r in rs]), "processes": max(r["processes"] for r in rs),
                    "load_s": med([r["load_s"] for r in rs]), "setup_s": med([r["setup_s"] for r in rs]),
                    "wall_s": med([r["wall_s"] for r in rs]), "train": rs[0]["train"]}
    return out


def round_pairs(rows: list[dict], top: tuple, bottom: tuple) -> list[tuple[dict, dict]]:
    """(top run, bottom run) of every round that has both."""
    by = {(r["source"], r["workers"], r["round"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    return [(by[(*top, k)], by[(*bottom, k)]) for k in rounds if (*top, k) in by and (*bottom, k) in by]


def per_round(rows: list[dict], top: tuple, bottom: tuple, field) -> str:
    """``field(top run) / field(bottom run)`` of each round, as text (same-round pairs only)."""
    return ", ".join(f"{field(a) / field(b):.2f}" for a, b in round_pairs(rows, top, bottom))


def quiet(r: dict) -> bool:
    return r.get("steal", 0.0) <= STEAL_MAX


def quiet_ratio(rows: list[dict], top: tuple, bottom: tuple) -> tuple[float, int, str]:
    """The median over the rounds whose two runs were quiet (little CPU stolen) of
    ``rate(top) / rate(bottom)``, how many rounds that is, and every round's ratio with the
    steal of its two runs, as text. No quiet round: the median over all of them."""
    pairs = round_pairs(rows, top, bottom)
    calm = [rate(a) / rate(b) for a, b in pairs if quiet(a) and quiet(b)]
    text = ", ".join(f"{rate(a) / rate(b):.2f} ({100 * a.get('steal', 0):.0f}%/{100 * b.get('steal', 0):.0f}%)"
                     for a, b in pairs)
    return med(calm or [rate(a) / rate(b) for a, b in pairs]), len(calm), text


def rate(r: dict) -> float:
    e = r["epochs"][-1]
    return e["steady_samples"] / e["steady_s"]


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def report(state: dict, out: Path, quick: bool) -> str:
    s = summarize(state["rows"])
    lines = ["# Data sources: throughput and memory (issue 15)", ""]
    if quick:
        lines += ["**Smoke run (`--quick`): small data, few samples; not the measurement.**", ""]
    m = state["machine"]
    lines += [f"Code: kdistill at {m.get('code', 'unknown')}.", ""]
    lines += [f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']:.0f} GB memory; torch {m['torch']} "
              f"({m['threads']} threads), Python {m['python']}. Started {m['date']}; load average "
              f"{m['load_start']} at the start, {state.get('load_end', '?')} at the end (other jobs, such as test "
              "suites, may have shared the machine: every ratio below compares runs of this same bench run, "
              "interleaved).", "",
              f"Bench time: {state.get('minutes', 0):.1f} min ({state.get('writing_s', 0) / 60:.1f} writing data, "
              f"{state.get('cache_s', 0) / 60:.1f} building caches, {state.get('jpeg_s', 0) / 60:.1f} JPEG part, "
              f"{state.get('runs_s', 0) / 60:.1f} timed runs in {state.get('rounds', 0)} round(s)).", ""]
    lines += ["## Distillation epoch by source and workers", "",
              "| source | train samples | workers | samples/s | samples/s, whole epoch | first batch s | "
              "peak anon MB (epoch) | PSS anon MB (epoch) | peak anon MB (whole run) | processes | load s | "
              "setup s | runs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in state["sources"]:
        for w in state["workers"]:
            c = s.get((key, w))
            if c is None:
                continue
            lines.append(f"| {SOURCES[key][0]} | {c['train']:,} | {w} | {c['rate']:.0f} | {c['epoch_rate']:.0f} | "
                         f"{c['first_batch_s']:.2f} | "
                         f"{c['peak_train']:.0f} | {c['pss_train']:.0f} | {c['peak_run']:.0f} | {c['processes']} | "
                         f"{c['load_s']:.1f} | {c['setup_s']:.1f} | {c['n']} |")
    any_cell = next(iter(s.values()), None)
    samples = any_cell["samples"] if any_cell else 0
    lines += ["", f"Each run: a fresh process builds the recipe and trains the demo's `distil` stage (teacher "
              "`fmnist_teacher.safetensors`, `data.normalize: teacher`; student `cnn [16, 32, 64]`, batch 128, KD "
              f"T=4 + hint on `stages.2`) for {state['epochs']} epoch(s) on a transfer set of {samples:,} samples "
              "(`data.transfer`, drawn at random from the whole training part, so the 10x sources are read all "
              "over their files), from a disk cache (`stages.cache`) built for each source in an untimed first "
              "pass. The run is `build_pipeline` + `train.fit.fit`, what `kdistill.run` trains with, without its "
              "final evaluation and report. Timing (in the child, around kdistill's own functions; the runner "
              "exposes no epoch hook and `summary.json`'s `stage_seconds` includes the end-of-stage evaluation): "
              "samples/s is the steady rate of the last epoch, from the first batch `BatchLoader.epoch` hands the "
              "loop to the last one (n - 1 whole fetch-and-train cycles; the workers' start is left out); "
              "whole epoch: its samples over the seconds of `kdistill.train.loop.run_epoch`; first batch s: from "
              "the epoch's start to its first batch (starting the workers). Peak anon MB: the largest sum of "
              "`RssAnon` over the process and all its descendants (DataLoader workers), sampled every 50 ms, "
              "during the epoch(s), and over the whole run (loading, splitting, the teacher check, the epochs). "
              "Forked workers share their parent's pages, which `RssAnon` counts in every process; PSS anon "
              "(sampled every 200 ms) shares them out. load s: `build_pipeline` (data loaded, checked, split; "
              "the teacher judged on 2,000 test images); setup s: from there to the first epoch (the cache "
              "key's fingerprint of the data, the cache opened). Median of the runs, which are interleaved: "
              "every source with 0 workers, then 1, then 2, sources shuffled with a fixed seed, per round.", ""]
    lines += ["## Targets", ""]
    a2 = s.get(("a", 2))
    lines += ["Throughput against (a) with 2 workers, same run (target >= 0.8). The ratio is the median over "
              f"the rounds in which neither run lost more than {100 * STEAL_MAX:.0f}% of the machine's CPU time to "
              "other guests of the host (`steal` in `/proc/stat`, read before and after each run; this virtual "
              "machine's neighbours take up to half of it at times), or over all rounds when none was quiet:", "",
              "| source | samples/s (2 workers) | (a) samples/s (2 workers) | ratio | quiet rounds | target | "
              "ratio in each round (steal of the two runs) |", "|---|---:|---:|---:|---:|---|---|"]
    for key in ("b", "c", "d"):
        c = s.get((key, 2))
        if c and a2:
            ratio, calm, rounds = quiet_ratio(state["rows"], (key, 2), ("a", 2))
            lines.append(f"| {SOURCES[key][0]} | {c['rate']:.0f} | {a2['rate']:.0f} | {ratio:.2f} | {calm} | "
                         f"{verdict(ratio >= 0.8)} | {rounds} |")
    lines += ["", "Peak anonymous memory (`RssAnon`, summed over the processes) of the 700,000-sample copy over "
              "the 70,000 one (target <= 1.2; during the epoch; the whole run and PSS for reference):", "",
              "| source | workers | 70k MB | 700k MB | ratio (epoch) | target | ratio in each round | ratio (whole run) "
              "| ratio (PSS, epoch) |",
              "|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for key in ("b", "c", "d"):
        for w in state["workers"]:
            small, large = s.get((key, w)), s.get((key + "10", w))
            if small and large:
                ratio = large["peak_train"] / small["peak_train"]
                lines.append(f"| {SOURCES[key][0]} | {w} | {small['peak_train']:.0f} | {large['peak_train']:.0f} | "
                             f"{ratio:.2f} | {verdict(ratio <= 1.2)} | "
                             f"{per_round(state['rows'], (key + '10', w), (key, w), lambda r: r['peak_train_mb'])} | "
                             f"{large['peak_run'] / small['peak_run']:.2f} | "
                             f"{large['pss_train'] / small['pss_train']:.2f} |")
    jpeg = state.get("jpeg", [])
    if jpeg:
        lines += ["", "## 224-px JPEG decoding (image_folder through BatchLoader)", "",
                  "| workers | images/s | images/s per worker | runs |", "|---:|---:|---:|---:|"]
        for w in sorted({j["workers"] for j in jpeg}):
            rates = [j["images"] / j["seconds"] for j in jpeg if j["workers"] == w]
            lines.append(f"| {w} | {med(rates):.0f} | {med(rates) / max(1, w):.0f} | {len(rates)} |")
        j = jpeg[0]
        lines += ["", f"{state['jpeg_files']:,} synthetic JPEGs (smooth random content, sides 224..320 px, quality "
                  f"90). `data.images: {{size: 256, crop: 224, random_crop: true, flip: true}}`, a training view "
                  f"(random resized crop and flip of every image), batches of {state['jpeg_batch']} "
                  f"`uint8 {tuple(j['shape'])}`, {j['images']:,} images timed after a warm-up batch per worker "
                  "(the workers started), each count in a fresh process; median of the runs."]
    return write_lines(lines, out)


def code_version() -> str:
    """The commit measured, and the files of ``kdistill/`` changed since (read-only git)."""
    def git(*args) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "kdistill").splitlines() if line.strip()]
    return commit + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def machine() -> dict:
    import platform

    import torch

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"code": code_version(), "cpus": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "date": subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip(),
            "load_start": " ".join(f"{v:.1f}" for v in os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small data, few samples, one round")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdistill-bench-data"),
                        help="where the data sets and caches are written (reused when present)")
    parser.add_argument("--samples", type=int, default=None, help="transfer samples an epoch (0: all)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs a run; the last one is timed")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of every configuration")
    parser.add_argument("--minutes", type=float, default=35.0, help="start no round that would end past this")
    parser.add_argument("--jpegs", type=int, default=None, help="synthetic JPEG files written")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration in this process
    args = parser.parse_args()
    if args.one:
        mode, *rest = json.loads(args.one)
        print(json.dumps({"measure": measure, "cache": build_cache, "jpeg": measure_jpeg}[mode](*rest)))
        return
    t0 = time.perf_counter()
    quick = args.quick
    work = args.work / "quick" if quick else args.work
    n_train, n_test = (3000, 1000) if quick else (60000, 10000)
    samples = args.samples if args.samples is not None else (500 if quick else 5000)
    workers = (0, 2) if quick else WORKERS
    repeats = args.repeats or (1 if quick else 3)
    jpegs = args.jpegs or (1000 if quick else 20000)
    jpeg_images, jpeg_batch = (384, 64) if quick else (3200, 64)
    out = work / "data_quick.md" if quick else args.results / "data.md"
    work.mkdir(parents=True, exist_ok=True)
    state = {"machine": machine(), "sources": list(SOURCES), "workers": list(workers), "epochs": args.epochs,
             "rows": [], "jpeg": [], "jpeg_files": jpegs, "jpeg_batch": jpeg_batch}
    print(f"work folder {work}; {state['machine']['cpus']} CPUs, load {state['machine']['load_start']}", flush=True)

    start = time.perf_counter()
    prepare(work, n_train, n_test)
    write_jpeg_folder(work / "jpeg224", jpegs)
    state["writing_s"] = time.perf_counter() - start

    start = time.perf_counter()  # the caches: one per source, untimed (found again by every run)
    for key in SOURCES:
        built = child("cache", bench_recipe(key, work, 0, samples or None, args.epochs))
        print(f"cache {key}: {built['seconds']:.1f} s, {built['bytes'] / 2**20:.0f} MB, "
              f"peak anon {built['peak_run_mb']:.0f} MB", flush=True)
    state["cache_s"] = time.perf_counter() - start

    start = time.perf_counter()
    for round_ in range(repeats):
        for w in (1, 2):
            r = child("jpeg", str(work / "jpeg224"), w, jpeg_images, jpeg_batch, round_)
            state["jpeg"].append({**r, "workers": w})
            print(f"jpeg {w} workers: {r['images'] / r['seconds']:.0f} images/s", flush=True)
    state["jpeg_s"] = time.perf_counter() - start

    start = time.perf_counter()
    order = random.Random(0)
    for round_ in range(repeats):
        began = time.perf_counter()
        if round_ and (began - t0) + (began - start) / round_ > args.minutes * 60:
            print(f"round {round_ + 1} skipped: it would end past {args.minutes:.0f} min", flush=True)
            break
        for w in workers:  # every source with 0 workers, then 1, then 2
            keys = list(SOURCES)
            order.shuffle(keys)
            for key in keys:
                r = child("measure", bench_recipe(key, work, w, samples or None, args.epochs))
                state["rows"].append({**r, "source": key, "workers": w, "round": round_})
                last = r["epochs"][-1]
                print(f"round {round_ + 1} {key} workers {w}: {last['steady_samples'] / last['steady_s']:.0f} samples/s, "
                      f"peak anon {r['peak_train_mb']:.0f} MB (run {r['peak_run_mb']:.0f}), wall {r['wall_s']:.0f} s, "
                      f"steal {100 * r['steal']:.0f}%",
                      flush=True)
        state.update(rounds=round_ + 1, runs_s=time.perf_counter() - start, minutes=(time.perf_counter() - t0) / 60,
                     load_end=" ".join(f"{v:.1f}" for v in os.getloadavg()))
        (work / ("data_quick.json" if quick else "data.json")).write_text(json.dumps(state, indent=1))
        text = report(state, out, quick)
    print(text)
    print(f"written {out}")


if __name__ == "__main__":
    main()
