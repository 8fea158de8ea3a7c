"""Whether a job shows its progress (bars, epoch lines), set once by the entry point that runs it.

The entry point (``kdistill.run``, ``kdistill cache``) sets it for the job's duration::

    with progress.shown(not quiet):
        ...

and the places that draw a bar or print a progress line ask it (``bar``, ``enabled``) instead of
being handed a flag through every call between. Off by default (a library call, a test); on, it
shows on the main process only (rank 0 under torchrun), and a bar only on a terminal.
"""

from __future__ import annotations

import contextlib
import contextvars

from tqdm import tqdm

from kdistill import distributed

DELAY = 2.0  # seconds a pass runs before its bar shows: short passes print nothing

_shown: contextvars.ContextVar[bool] = contextvars.ContextVar("kdistill_progress_shown", default=False)


@contextlib.contextmanager
def shown(on: bool = True):
    """Progress shown (``on``) or not inside the block; as it was after it."""
    token = _shown.set(bool(on))
    try:
        yield
    finally:
        _shown.reset(token)


def enabled() -> bool:
    """Whether this process shows progress now: the job asked for it, and this is the main process."""
    return _shown.get() and distributed.is_main()


def bar(total: int, desc: str | None, unit: str = " samples") -> tqdm:
    """A bar named ``desc`` over ``total`` items (done, rate, time left) that shows once its pass
    has run ``DELAY`` seconds, on a terminal only, and only where progress is ``enabled``; never
    for a pass without a name (``desc`` None), which callers leave unnamed when not worth a bar."""
    return tqdm(total=total, desc=desc, unit=unit, delay=DELAY, leave=False, dynamic_ncols=True,
                disable=None if enabled() and desc is not None else True)  # None: off when stderr is not a terminal


def over(items, desc: str, total: int, initial: int = 0) -> tqdm:
    """``items`` iterated under a bar of ``total`` steps (``initial`` done already), shown at once
    where progress is ``enabled`` (a training epoch)."""
    return tqdm(items, desc=desc, initial=initial, total=total, disable=not enabled(), leave=False,
                dynamic_ncols=True)
