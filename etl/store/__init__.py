"""Storage: the only code that writes tables.  One module per concern:

* :mod:`~etl.store.queue` — both queues: enqueue, claim/release with leases, the engine's queue
  updates, making ids due, re-queueing ended items;
* :mod:`~etl.store.summaries` — summary rows and the engine's batch write (:func:`save_entries`);
* :mod:`~etl.store.calls` — calls, participants, voicemails, call 404s;
* :mod:`~etl.store.transcripts` — transcript rows, their batch write, pruning;
* :mod:`~etl.store.runs` — ``sync_runs`` and ``discovery_runs``;
* :mod:`~etl.store.discovery` — discovery watermarks;
* :mod:`~etl.store.deliveries` — ``webhook_deliveries``;
* :mod:`~etl.store.budget` — the rate budget's row;
* :mod:`~etl.store.rejected` — records that could not be stored, with their reason;
* :mod:`~etl.store.fallback` — record by record in savepoints, when a batch failed;
* :mod:`~etl.store.tx` — :func:`transaction`, the one deadlock / lock-wait retry.

Every function but :func:`transaction` takes a :class:`sqlalchemy.engine.Connection` inside a
transaction the caller opened, so the caller decides what commits together.  Every row written
carries a workspace (issue 27): the ``workspace`` keyword (the engines pass ``settings.workspace``;
``default`` when omitted), and every read of work (claims, due items, re-queues, watermarks, refresh
records, deliveries) is within it.  Ids are global: an id another workspace stored is left as it is.  SQL is SQLAlchemy
Core with bound parameters only, plus the one native feature each job needs per dialect:
``FOR UPDATE SKIP LOCKED`` to claim on PostgreSQL/MariaDB (SQLite serialises writers with
``BEGIN IMMEDIATE``, see :mod:`etl.db`) and the native upsert (:func:`etl.store._sql.upsert`).
"""

from etl.store.budget import create_budget, read_budget, write_budget
from etl.store.calls import CallsSaved, forget_calls, record_call_not_found, save_calls
from etl.store.deliveries import event_seen, prune_deliveries, record_delivery, signed_at_of
from etl.store.discovery import (
    call_watermarks,
    conversation_marks,
    set_call_watermark,
    set_conversation_mark,
    set_watermark,
    watermarks,
)
from etl.store.fallback import RECORD_ERRORS, each_storable
from etl.store.queue import (
    analyze_queue,
    anything_due,
    claim,
    drop_pending,
    due,
    end_waiting,
    ended,
    enqueue_ids,
    enqueue_transcripts,
    insert_ended,
    lease_holder,
    make_due_first,
    make_transcript_due,
    mark_done,
    owned,
    queue_states,
    queued,
    release,
    requeue,
    update_queue,
)
from etl.store.rejected import Rejected, record_rejected
from etl.store.runs import (
    add_discovery_counts,
    add_run_counts,
    drop_discovery_run,
    finish_discovery_run,
    finish_run,
    start_discovery_run,
    start_run,
)
from etl.store.summaries import Entry, save_entries, save_listed_summaries, save_summaries
from etl.store.transcripts import (
    TranscriptEntry,
    clear_raw_json,
    prune_transcript_lines,
    save_transcript_entries,
    save_transcripts,
)
from etl.store.tx import is_lost, is_retryable, transaction

__all__ = [
    "RECORD_ERRORS", "CallsSaved", "Entry", "Rejected", "TranscriptEntry",
    "add_discovery_counts", "add_run_counts", "analyze_queue", "anything_due", "call_watermarks", "claim",
    "clear_raw_json", "conversation_marks",
    "create_budget", "drop_discovery_run", "drop_pending", "due", "each_storable", "end_waiting",
    "ended", "enqueue_ids", "enqueue_transcripts", "event_seen", "finish_discovery_run", "finish_run",
    "forget_calls", "insert_ended", "is_lost", "is_retryable", "lease_holder", "make_due_first",
    "make_transcript_due", "mark_done", "owned", "prune_deliveries", "prune_transcript_lines", "queue_states",
    "queued", "read_budget", "record_call_not_found", "record_delivery", "record_rejected", "release", "requeue",
    "save_calls", "save_entries", "save_listed_summaries", "save_summaries", "save_transcript_entries",
    "save_transcripts", "set_call_watermark", "set_conversation_mark", "set_watermark", "signed_at_of",
    "start_discovery_run", "start_run", "transaction", "update_queue", "watermarks", "write_budget",
]
