"""Several workspaces in one process (etl.fleet, etl.running.together): the combined exit code, one
signal handler for every run on its worker thread, the workspace bound on each thread's log lines
(and on the threads those start), failures kept per workspace.  No database: plain tasks."""

from __future__ import annotations

import contextvars
import functools
import signal
import sys
import threading

import pytest
import structlog

from etl.clock import SYSTEM
from etl.errors import AuthError, DatabaseError, UsageError
from etl.fleet import EXIT_ORDER, combined_exit_code, run_each
from etl.running import _signals, together

# The tasks here return their exit code.
each = functools.partial(run_each, exit_code=lambda r: r, clock=SYSTEM)


@pytest.mark.parametrize(("codes", "combined"), [
    ([], 0), ([0, 0], 0), ([0, 1], 1), ([1, 4], 4), ([4, 2], 2), ([2, 3, 1], 3), ([0, 3], 3), ([1, 5], 1),
    ([0, 5, 6], 6), ([5, 1, 4], 4),
])
def test_the_combined_exit_code_is_the_first_of_3_2_4_1(codes, combined):
    assert EXIT_ORDER == (3, 2, 4, 1)
    assert combined_exit_code(codes) == combined


def test_each_task_runs_on_its_own_thread_with_its_workspace_bound_also_on_the_threads_it_starts():
    seen: dict[str, tuple[str, object, object]] = {}
    both = threading.Barrier(2, timeout=30)  # the two tasks are on the thread at once, or this times out

    def task(name: str) -> int:
        both.wait()
        inner: list[object] = []
        # A thread the task starts in a copy of its context (as etl.sync's fetch threads are).
        child = threading.Thread(target=contextvars.copy_context().run,
                                 args=(lambda: inner.append(structlog.contextvars.get_contextvars().get("workspace")),))
        child.start()
        child.join()
        seen[name] = (threading.current_thread().name, structlog.contextvars.get_contextvars().get("workspace"),
                      inner[0])
        return 0 if name == "north" else 4

    results = each([("north", lambda: task("north")), ("south", lambda: task("south"))])
    assert seen == {"north": ("etl-workspace-north", "north", "north"),
                    "south": ("etl-workspace-south", "south", "south")}
    assert dict(results) == {"north": 0, "south": 4}
    assert (results.exit_codes, results.exit_code, results.failures) == ({"north": 0, "south": 4}, 4, {})
    assert structlog.contextvars.get_contextvars().get("workspace") is None  # the caller's context untouched


def test_a_workspace_that_raises_an_etl_error_has_a_failure_and_the_others_their_results():
    def refused() -> int:
        raise AuthError(401, "bad key")

    def lost() -> int:
        raise DatabaseError("the database is gone")

    results = each([("a", lambda: 0), ("b", refused), ("c", lost), ("d", lambda: 1)])
    assert list(results) == ["a", "d"]
    assert {name: str(exc) for name, exc in results.failures.items()} == {"b": "bad key", "c": "the database is gone"}
    assert results.exit_codes == {"a": 0, "b": 3, "c": 2, "d": 1}
    assert results.exit_code == 3


def test_a_bug_in_one_workspace_is_raised_once_every_thread_has_ended():
    finished = threading.Event()

    def slow() -> int:
        finished.set()
        return 0

    def bug() -> int:
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError):
        each([("a", slow), ("b", bug)])
    assert finished.is_set()


def test_one_signal_reaches_every_run_of_the_group_on_its_worker_thread():
    assert threading.current_thread() is threading.main_thread()  # pytest (and each xdist worker) runs here
    heard: dict[str, list[str]] = {"north": [], "south": [], "late": []}
    registered = threading.Barrier(3, timeout=30)
    stop = {name: threading.Event() for name in heard}

    def run(name: str, wait_for_others: bool) -> int:
        def on_signal(signum: int, _frame: object) -> None:
            heard[name].append(signal.Signals(signum).name)
            stop[name].set()

        with _signals(on_signal):  # what run_sync / run_discover do on a worker thread of the group
            if wait_for_others:
                registered.wait()
            assert stop[name].wait(30)
        return 1

    def late() -> int:
        stop["north"].wait(30)  # registers only after the signal: hears it at once
        return run("late", False)

    before = signal.getsignal(signal.SIGTERM)
    with together() as group:
        assert signal.getsignal(signal.SIGTERM) is group
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(run, name, True))
                   for name in ("north", "south")]
        late_thread = threading.Thread(target=contextvars.copy_context().run, args=(late,))
        for thread in (*threads, late_thread):
            thread.start()
        registered.wait()
        signal.raise_signal(signal.SIGTERM)
        for thread in (*threads, late_thread):
            thread.join()
    assert heard == {"north": ["SIGTERM"], "south": ["SIGTERM"], "late": ["SIGTERM"]}
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_usage_error_in_a_workspace_keeps_its_exit_code_2():
    def bad() -> int:
        raise UsageError("no")

    results = each([("x", bad)])
    assert (results.exit_codes, results.exit_code, dict(results)) == ({"x": 2}, 2, {})


def main_thread_waits() -> None:
    """Return once the main thread is blocked in run_each's wait for the workspaces' threads."""
    main = threading.main_thread().ident
    assert main is not None
    for _ in range(10_000_000):
        frame = sys._current_frames().get(main)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if "run_each" in names and names & {"wait", "idle", "join", "_wait_for_tstate_lock"}:
            return
    raise AssertionError("the main thread never waited")


def test_a_signal_the_kernel_hands_to_another_thread_still_stops_every_run():
    """A SIGTERM from outside may land on any thread (here: one that is no run's, as an HTTP server's);
    its Python handler runs on the main thread, which therefore must not sit in join() while the runs go
    on (they would never hear it)."""
    stop = {name: threading.Event() for name in ("north", "south")}
    registered = threading.Barrier(3, timeout=30)

    def other() -> None:
        registered.wait()
        main_thread_waits()  # for the runs to end: now a signal to another thread must still reach it
        signal.raise_signal(signal.SIGTERM)  # raise(): delivered to this thread

    def run(name: str) -> int:
        with _signals(lambda signum, _frame: stop[name].set()):
            registered.wait()
            return 1 if stop[name].wait(30) else 0

    sender = threading.Thread(target=other)
    sender.start()
    results = each([("north", lambda: run("north")), ("south", lambda: run("south"))])
    sender.join()
    assert results.exit_codes == {"north": 1, "south": 1}
