"""What ``etl backfill`` does besides syncing: which items to re-queue, and its dry run.

:func:`selection` turns the options (``--status``, ``--force``, ``--since``,
``--until``) into a :class:`etl.report.Selection` or refuses them with the
message the CLI prints; :class:`Plan` is what a dry run would do.  The
orchestration (discover or enqueue, re-queue, sync with progress) is
:meth:`etl.Etl.backfill`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from etl.enqueue import IdCounts
from etl.errors import UsageError
from etl.report import Selection
from etl.states import TERMINAL_STATES


def parse_states(value: str | None) -> tuple[str, ...]:
    """``failed,error`` → ``("failed", "error")``; an unknown state is a :class:`UsageError`."""
    if not value:
        return ()
    return check_states(s.strip() for s in value.split(",") if s.strip())


def check_states(states: Iterable[str]) -> tuple[str, ...]:
    states = tuple(states)
    bad = [s for s in states if s not in TERMINAL_STATES]
    if bad:
        raise UsageError(f"unknown state {bad[0]!r} in --status; choose from {', '.join(TERMINAL_STATES)}")
    return states


def selection(states: Iterable[str] = (), since: datetime | None = None, until: datetime | None = None,
              force: bool = False) -> Selection | None:
    """The end states to re-queue (``done`` only with ``force``, which implies it), or None."""
    chosen = check_states(states)
    if "done" in chosen and not force:
        raise UsageError("re-fetching done items needs --force")
    if force and "done" not in chosen:
        chosen = (*chosen, "done")
    if since is not None and until is not None and until <= since:
        raise UsageError(f"--until {until:%Y-%m-%d %H:%M:%S} is not after --since {since:%Y-%m-%d %H:%M:%S}: "
                         "nothing finished in between")
    if (since or until) and not chosen:
        raise UsageError("--since/--until select items to re-queue: add --status STATES or --force")
    return Selection(chosen, since, until) if chosen else None


@dataclass(frozen=True)
class Plan:
    """What a backfill would do (``--dry-run``): nothing is changed."""

    due_now: int
    requeue: dict[str, int] = field(default_factory=dict)  # items per end state that would be re-queued
    file: IdCounts | None = None  # what the id file holds, when one was given
    source: str | None = None  # the id file's name
    transcripts: int | None = None  # transcripts of synced calls that would be queued (--missing-transcripts)


def requeue_selection(states: str | None, since: datetime | None = None, until: datetime | None = None,
                      force: bool = False) -> Selection | None:
    """:func:`selection` from ``backfill --status`` text (``"failed,error"``)."""
    return selection(parse_states(states), since, until, force)
