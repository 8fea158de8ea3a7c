"""The job's progress setting: set by the entry point for its duration, asked where bars are drawn."""

import io
import sys
import threading

from fixtures import as_terminal

from kdistill import progress


def test_off_unless_the_job_asks_and_restored_after_it():
    assert not progress.enabled()  # a library call, a test: no bars
    with progress.shown(True):
        assert progress.enabled()
        with progress.shown(False):  # an inner job (a quiet one) turns it off for its own duration
            assert not progress.enabled()
        assert progress.enabled()
    assert not progress.enabled()


def test_restored_when_the_job_raises():
    try:
        with progress.shown(True):
            raise ValueError("the job failed")
    except ValueError:
        pass
    assert not progress.enabled()


def test_a_job_in_another_thread_does_not_turn_on_this_ones():
    seen = []

    def job():
        with progress.shown(True):
            seen.append(progress.enabled())
            done.wait(5)

    done = threading.Event()
    worker = threading.Thread(target=job)
    worker.start()
    while not seen:
        pass
    assert seen == [True] and not progress.enabled()
    done.set()
    worker.join()


def test_a_bar_shows_on_a_terminal_only_when_enabled_and_named(monkeypatch):
    terminal = as_terminal(monkeypatch)
    for on, desc in ((False, "pass"), (True, None)):
        with progress.shown(on), progress.bar(3, desc) as bar:
            bar.update(3)
    assert terminal.getvalue() == ""
    with progress.shown(True), progress.bar(3, "teacher outputs") as bar:
        bar.update(3)
    assert "teacher outputs:" in terminal.getvalue() and "/3 " in terminal.getvalue()
    log = io.StringIO()  # a log file: no bar
    monkeypatch.setattr(sys, "stderr", log)
    with progress.shown(True), progress.bar(3, "teacher outputs") as bar:
        bar.update(3)
    assert log.getvalue() == ""
