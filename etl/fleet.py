"""Several workspaces in one run (issue 27): one child :class:`etl.Etl` per workspace, each on a thread of its own.

``etl sync``, ``discover`` and ``backfill`` with a workspaces file run every
selected workspace at once, in one process: :func:`run_each` starts one thread
per workspace, each running that workspace's child job (``Etl.workspace(name)``:
its settings, its key) through the single-workspace machinery, unchanged.
Each key has its own rate budget (:mod:`etl.budget`: one row per key,
shared with every other process on that key), and each run claims only its
own workspace's items, so a workspace with a long backlog never holds back
another's fresh calls: they are fetched on the other key's budget, meanwhile.

Around the threads:

* **one signal handler** (:func:`etl.running.together`): SIGTERM/SIGINT stop
  every run; a second one abandons every sync's in-flight requests;
* **the workspace on every log line**: each thread binds ``workspace=NAME``
  with structlog's contextvars (the sync's fetch threads start in a copy of
  that context, :mod:`etl.sync`);
* **one exit code** (:func:`combined_exit_code`): the first of 3, 2, 4, 1 that
  any workspace exited with, else 0 — a refused key or a configuration error
  (a person must act before the next run) before an API never reached (it may
  pass by itself) before item errors or an interrupted run.

A workspace whose thread raised an :class:`etl.errors.EtlError` (its database
lost at start, …) has no result but a failure with that error's exit code; the
others' results stand.  Anything else (a bug) is raised again once every
thread has ended.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

import structlog

from etl.clock import Clock
from etl.errors import EtlError
from etl.running import together

__all__ = ["EXIT_ORDER", "WorkspaceResults", "combined_exit_code", "run_each"]

T = TypeVar("T")

# The combined exit code of several workspaces: the first of these any of them exited with.
EXIT_ORDER = (3, 2, 4, 1)
# How soon a signal received on another thread is handled (the coordinator of a sync wakes as often).
_HEARTBEAT_S = 0.25


def combined_exit_code(codes: Iterable[int]) -> int:
    """One exit code for several workspaces' runs: the first of :data:`EXIT_ORDER` among ``codes``
    (any other non-zero code after them, the highest first), else 0."""
    found = set(codes)
    for code in EXIT_ORDER:
        if code in found:
            return code
    return max(found - {0}, default=0)


class WorkspaceResults(Mapping[str, T], Generic[T]):
    """What each workspace's run gave (name → result, in the file's order) and the one exit code.

    ``failures``: the workspaces whose run raised an :class:`etl.errors.EtlError` instead (name →
    error; no result); ``exit_codes``: every workspace's own code, failures included.
    """

    def __init__(self, results: Mapping[str, T], failures: Mapping[str, EtlError],
                 exit_codes: Mapping[str, int]) -> None:
        self._results = dict(results)
        self.failures: dict[str, EtlError] = dict(failures)
        self.exit_codes: dict[str, int] = dict(exit_codes)

    def __getitem__(self, name: str) -> T:
        return self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def exit_code(self) -> int:
        """The combined exit code (:func:`combined_exit_code` over :attr:`exit_codes`)."""
        return combined_exit_code(self.exit_codes.values())

    def __repr__(self) -> str:
        return f"WorkspaceResults({self._results!r}, failures={self.failures!r}, exit_code={self.exit_code})"


def run_each(tasks: Sequence[tuple[str, Callable[[], T]]], exit_code: Callable[[T], int], *,
             clock: Clock) -> WorkspaceResults[T]:
    """Run each ``(workspace, task)`` on a thread of its own, all at once, under one signal handler;
    ``exit_code`` reads a result's code.  Returns when every task has."""
    results: dict[str, T] = {}
    failures: dict[str, EtlError] = {}
    bugs: list[BaseException] = []
    left = [len(tasks)]
    lock = threading.Lock()
    all_done = threading.Event()

    def one(name: str, task: Callable[[], T]) -> None:
        structlog.contextvars.bind_contextvars(workspace=name)
        try:
            results[name] = task()
        except EtlError as exc:
            failures[name] = exc
        except BaseException as exc:  # a bug: raised again on the calling thread, after the others end
            bugs.append(exc)
        finally:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

    with together():
        # Each thread in a copy of this context: it sees the stop group, and its own binding stays its own.
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, name, task),
                                    name=f"etl-workspace-{name}", daemon=True) for name, task in tasks]
        for thread in threads:
            thread.start()
        if not threads:
            all_done.set()
        # A heartbeat, not a join: a signal the kernel hands to another thread runs its Python handler
        # only when this (the main) thread next runs, and a thread blocked in join() would not until
        # every run had ended by itself.
        while not clock.idle(_HEARTBEAT_S, all_done):
            pass
        for thread in threads:
            thread.join()
    if bugs:
        raise bugs[0]
    order = [name for name, _ in tasks]
    codes = {name: exit_code(results[name]) if name in results else failures[name].exit_code for name in order}
    return WorkspaceResults({n: results[n] for n in order if n in results},
                            {n: failures[n] for n in order if n in failures}, codes)
