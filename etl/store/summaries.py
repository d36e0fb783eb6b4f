"""Summary rows (``call_summaries`` and its children) and the engine's batch write: calls, 404s,
summaries and queue updates of the items a run still leases, in one transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from etl.config import DEFAULT_WORKSPACE
from etl.policy import ClaimedItem, QueueUpdate
from etl.store._sql import Tree, read_in, replace_changed
from etl.store.calls import record_call_not_found, save_calls
from etl.store.queue import end_waiting, insert_ended, owned, queue_states, update_queue
from etl.store.rejected import Rejected, record_rejected
from etl.tables import fields_t, jobs_t, lines_t, steps_t, summaries_t

if TYPE_CHECKING:
    from etl.normalize import CallContextRows, CallRows
    from etl.results import SummaryResult

# Children first: the order deletes must run in (and the reverse for inserts).
_CHILD_TABLES = (fields_t, jobs_t, steps_t, lines_t)
_PARENT_UPDATE_COLUMNS = (
    "status", "summary_text", "line_count", "next_step_count", "job_count", "type", "title",
    "content_hash", "raw_json", "last_synced_at", "as_of",
)


@dataclass(slots=True, kw_only=True)
class Entry:
    """One processed item: the claim, the API's answer, the decision, the rows.

    ``call``: the call's context fetched in this attempt (``GET /v1/calls/{id}``,
    or the call that came with the summary on the dated surface);
    ``call_not_found``: that fetch answered 404 (``(lookup state, error)``);
    ``rejected``: a record of this attempt that could not be stored (the call
    context, refused with its reason).
    All land in the transaction of the queue update, only while the lease holds.
    """

    item: ClaimedItem
    result: SummaryResult | None
    update: QueueUpdate
    rows: CallRows | None
    call: CallContextRows | None = None
    call_not_found: tuple[str, str | None] | None = None
    rejected: Rejected | None = None


def save_entries(conn: Connection, run_id: str, entries: Sequence[Entry], now: datetime, *,
                 workspace: str = DEFAULT_WORKSPACE) -> list[Entry]:
    """Write summaries and queue updates of ``entries`` in the caller's transaction, their rows in
    ``workspace`` (the run's: it claimed the items from that workspace's queue).

    Returns the entries actually written: an entry whose lease this run lost
    (it expired and another run claimed the item) is skipped entirely.
    """
    if not entries:
        return []
    mine = owned(conn, run_id, [e.item.call_id for e in entries])
    entries = [e for e in entries if e.item.call_id in mine]
    if not entries:
        return []
    calls = [e.call for e in entries if e.call is not None]
    if calls:
        save_calls(conn, calls, now, workspace=workspace)
    for e in entries:
        if e.call_not_found is not None:
            record_call_not_found(conn, e.item.call_id, e.call_not_found[0], now, e.call_not_found[1],
                                  workspace=workspace)
    for e in entries:
        if e.rejected is not None:
            record_rejected(conn, e.rejected, now, workspace=workspace)
    save_summaries(conn, [e.rows for e in entries if e.rows is not None], now, workspace=workspace)
    update_queue(conn, run_id, [e.update for e in entries], now)
    return entries


def save_summaries(conn: Connection, calls: Sequence[CallRows], now: datetime, *,
                   workspace: str = DEFAULT_WORKSPACE) -> set[str]:
    """Upsert summary rows and replace their children as a whole, in the caller's transaction;
    unchanged content (the same ``content_hash``) only moves ``last_synced_at``.  New rows are in
    ``workspace``; a summary stored under another workspace is left as it is.

    The newer summary wins: a row's ``as_of`` (when the API answered it, ``now``
    unless the caller set it, e.g. to a webhook event's ``createdAt``) older than
    the stored one's is not written.  Returns the ids not written for that.

    The write of :func:`save_entries`, and that of a summary that did not come
    through a claim (a webhook delivery carrying the whole summary).
    """
    for c in calls:
        c.parent.setdefault("as_of", now)
    # One read of the stored parents serves both checks: newer-wins here, content hash in replace_changed.
    stored = read_in(conn, summaries_t, ("call_id", "content_hash", "workspace", "as_of"), "call_id",
                     [c.parent["call_id"] for c in calls])
    older = {c.parent["call_id"] for c in calls if _older(c.parent, stored.get(c.parent["call_id"]))}
    calls = [c for c in calls if c.parent["call_id"] not in older]
    if calls:
        replace_changed(conn, summaries_t, _CHILD_TABLES, [Tree(parent=c.parent, children={
            lines_t: c.lines, steps_t: c.next_steps, jobs_t: c.jobs, fields_t: c.job_fields}) for c in calls],
            _PARENT_UPDATE_COLUMNS, now, workspace=workspace,
            stored_rows={i: (row[0], row[1]) for i, row in stored.items()})
    return older


def _older(parent: dict[str, Any], stored: tuple[Any, ...] | None) -> bool:
    """Whether the stored row (content hash, workspace, as_of) answered later than ``parent``."""
    return stored is not None and stored[2] is not None and parent["as_of"] is not None and parent["as_of"] < stored[2]


def save_listed_summaries(conn: Connection, summaries: Sequence[CallRows], updates: Sequence[QueueUpdate],
                          now: datetime, *, only_queued: Collection[str] = (),
                          workspace: str = DEFAULT_WORKSPACE) -> int:
    """Summaries that arrived final in a calls listing (the dated surface): rows and queue rows at once.

    The same rows as a sync writes (:func:`save_summaries`: unchanged content is not
    rewritten).  Each id's queue row gets its end state: inserted when the id
    was not queued, updated when it was waiting (``pending``, a lease taken
    away: that run's own result is then discarded as a lost lease).  An id
    already in an end state keeps its row; an id in ``only_queued`` is never
    inserted (a call the API will never summarise needs no queue row).  Rows
    are ``workspace``'s; an id another workspace holds is left as it is.
    Returns how many queue rows changed.
    """
    save_summaries(conn, summaries, now, workspace=workspace)
    if not updates:
        return 0
    existing = queue_states(conn, [u.call_id for u in updates], workspace=workspace)
    fresh = [u for u in updates if u.call_id not in existing and u.call_id not in only_queued]
    waiting = [u for u in updates if existing.get(u.call_id) == "pending"]
    insert_ended(conn, fresh, now, workspace=workspace)
    end_waiting(conn, waiting, now)
    return len(fresh) + len(waiting)
