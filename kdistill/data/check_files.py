"""Every sample of a file source decoded once, up front: the unreadable files all at once
(``kdistill check-data``), or dropped from a run (``data.images.skip_unreadable``).

Samples are decoded in chunks by a pool of threads (Pillow decodes outside the GIL), a bounded
number of chunks in flight: nothing but the problems found is kept in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from kdistill.data.source import Source, SubsetSource, say
from kdistill.errors import KDistillError

CHUNK = 64  # samples a thread decodes in one task
SHOWN = 20  # unreadable files check-data lists before its summary line
SKIPPED_FILE = "skipped_files.txt"  # in the run directory: the files data.images.skip_unreadable dropped


def sample_name(source: Source, i: int) -> str:
    """How sample ``i`` is named: its file where the source has files, else its number."""
    if isinstance(source, SubsetSource):
        return sample_name(source.base, int(source.rows[i]))
    if callable(getattr(source, "path", None)):
        return source.path(i)
    return f"{source.name} sample {i}"


def _problem(source: Source, i: int) -> str | None:
    """Why sample ``i`` cannot be decoded, or None."""
    from kdistill.data.images import UnreadableImage

    try:
        source.fetch(torch.tensor([i]))
    except UnreadableImage as err:
        return err.reason
    except KDistillError as err:
        return str(err)
    return None


def _chunk(source: Source, rows: range) -> list[tuple[int, str]]:
    return [(i, why) for i in rows if (why := _problem(source, i)) is not None]


def unreadable(source: Source, workers: int | None = None) -> Iterator[tuple[int, str, str]]:
    """``(sample, name, reason)`` of every sample of ``source`` that cannot be decoded, in order."""
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = (range(start, min(start + CHUNK, len(source))) for start in range(0, len(source), CHUNK))
    with ThreadPoolExecutor(workers) as pool:
        pending = []
        for rows in chunks:
            pending.append(pool.submit(_chunk, source, rows))
            if len(pending) >= 2 * workers:  # a bounded number of chunks in flight
                yield from _named(source, pending.pop(0).result())
        for future in pending:
            yield from _named(source, future.result())


def _named(source: Source, found: list[tuple[int, str]]):
    for i, why in found:
        yield i, sample_name(source, i), why


def drop_unreadable(source: Source, workers: int | None = None) -> tuple[Source, list[tuple[str, str]]]:
    """``source`` without its unreadable samples (a ``SubsetSource`` of the rest), and the
    ``(name, reason)`` of each dropped."""
    bad = list(unreadable(source, workers))
    if not bad:
        return source, []
    keep = torch.ones(len(source), dtype=torch.bool)
    keep[torch.tensor([i for i, _, _ in bad])] = False
    return SubsetSource(source, torch.nonzero(keep).flatten()), [(name, why) for _, name, why in bad]


def check_sources(sources: dict[str, Source], workers: int | None = None, shown: int = SHOWN,
                  echo=print) -> tuple[int, int]:
    """Decode every sample of ``sources`` (by part: train, test) once; ``echo`` the first
    ``shown`` unreadable ones, one line each (``name: reason``). Returns (unreadable, samples)."""
    count = total = 0
    for part, source in sources.items():
        total += len(source)
        for _, name, why in unreadable(source, workers):
            count += 1
            if count <= shown:
                echo(f"{name}: {why} ({part})")
    return count, total


def skip_unreadable(train: Source, test: Source) -> tuple[Source, Source]:
    """The sources without their unreadable files (each decoded once now), in one warning line;
    each source returned holds ``skipped``: ``(file, reason)`` of those it left out."""
    kept = []
    for source in (train, test):
        rest, skipped = drop_unreadable(source)
        rest.skipped = skipped
        kept.append(rest)
    count = sum(len(s.skipped) for s in kept)
    if count:
        say(f"warning: data: skipped {count} unreadable image files of {len(train) + len(test)} "
             f"(data.images.skip_unreadable: true); the list goes to the run directory's {SKIPPED_FILE}")
    return kept[0], kept[1]
