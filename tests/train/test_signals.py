"""kdistill.train.signals: SIGINT and SIGTERM set an Event inside the block instead of raising."""

import os
import signal
import threading

import pytest

from kdistill.train.signals import stop_on_signals


@pytest.fixture
def own_handlers():
    """Distinct previous handlers for SIGINT and SIGTERM, restored after the test."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    calls = []

    def on_int(*_):
        calls.append("int")

    def on_term(*_):
        calls.append("term")

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)
    yield on_int, on_term, calls
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_sets_the_event_and_does_not_raise(sig, own_handlers):
    on_int, on_term, calls = own_handlers
    with stop_on_signals() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), sig)  # no KeyboardInterrupt (or termination) escapes
        assert stop.wait(5.0)
    assert calls == []  # the previous handlers were not called
    assert signal.getsignal(signal.SIGINT) is on_int and signal.getsignal(signal.SIGTERM) is on_term


def test_sigint_with_the_default_handler_does_not_raise_keyboard_interrupt():
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own: raises KeyboardInterrupt
    try:
        with stop_on_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(5.0)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    except KeyboardInterrupt:  # pragma: no cover - the failure this test looks for
        pytest.fail("SIGINT raised KeyboardInterrupt inside stop_on_signals")
    finally:
        signal.signal(signal.SIGINT, before)


def test_previous_handlers_restored_when_the_block_raises(own_handlers):
    on_int, on_term, _ = own_handlers
    with pytest.raises(RuntimeError):
        with stop_on_signals():
            raise RuntimeError("training failed")
    assert signal.getsignal(signal.SIGINT) is on_int and signal.getsignal(signal.SIGTERM) is on_term


def test_outside_the_main_thread_the_event_is_set_only_by_the_caller(own_handlers):
    on_int, on_term, _ = own_handlers
    seen = {}

    def worker():
        with stop_on_signals() as stop:
            seen["handler"] = signal.getsignal(signal.SIGINT)
            seen["set"] = stop.is_set()
            stop.set()
            seen["after"] = stop.is_set()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"handler": on_int, "set": False, "after": True}
    assert signal.getsignal(signal.SIGINT) is on_int
