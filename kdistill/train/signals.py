"""SIGINT and SIGTERM while a run trains: the loop writes a checkpoint and stops cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def stop_on_signals():
    """Yields an Event that SIGINT and SIGTERM set while the block runs (in the main thread;
    elsewhere signals cannot be caught and the Event is only set by the caller)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
