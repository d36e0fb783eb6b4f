"""SQLAlchemy models: the tables of docs/contract.md, the BI contract.

Every timestamp is a naive UTC ``DATETIME`` (microsecond precision on every
database).  Long text is ``TEXT`` on SQLite/PostgreSQL and ``LONGTEXT`` on
MySQL/MariaDB, whose plain ``TEXT`` stops at 64 KiB.  Call ids are compared
byte for byte (``ascii_bin`` on MySQL, whose default collation is
case-insensitive and would merge ``ACab`` with ``ACAB``).

Every column carries a ``comment`` (set on PostgreSQL and MariaDB by the
migrations; SQLite has no comments), a short form of ``docs/schema.md``.
The analyst views of ``VIEWS`` are not models: migration 0002 creates them
with hand-written SQL, and alembic's autogenerate is told to leave them alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import expression
from sqlalchemy.sql.compiler import SQLCompiler

from etl.ids import CALL_ID_LENGTH as CALL_ID_LENGTH  # defined with the id rule
from etl.states import QUEUE_STATES, SUMMARY_STATUSES

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VALUE_TYPES = ("string", "number", "boolean")


# The BI views created by migrations (docs/schema.md); not tables of this metadata.
VIEWS = ("call_job_field_values", "call_summary_overview", "call_overview")

# Job and field names are unbounded API text: a plain btree index fails on
# PostgreSQL for values over ~2.7 kB and MySQL cannot index LONGTEXT without a
# prefix, so these indexes hash on PostgreSQL and index a 191-character prefix
# (764 bytes of utf8mb4) on MySQL/MariaDB, named for both of SQLAlchemy's dialects.
_NAME_INDEX_KW: dict[str, Any] = {"postgresql_using": "hash", "mysql_length": 191, "mariadb_length": 191}

CallIdType = String(CALL_ID_LENGTH).with_variant(
    mysql.VARCHAR(CALL_ID_LENGTH, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UtcDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class sql_utcnow(expression.FunctionElement[datetime]):
    """The database's current UTC time, for server-side defaults (the Python side is etl.clock.utcnow)."""

    type = DateTime()
    inherit_cache = True


@compiles(sql_utcnow, "sqlite")
def _utcnow_sqlite(element: sql_utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(sql_utcnow, "postgresql")
def _utcnow_postgresql(element: sql_utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "timezone('utc', statement_timestamp())"


@compiles(sql_utcnow, "mysql")
@compiles(sql_utcnow, "mariadb")
def _utcnow_mysql(element: sql_utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SummaryQueue(Base):
    """One row per call id to fetch; see docs/contract.md "Queue semantics"."""

    __tablename__ = "summary_queue"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(QUEUE_STATES)})", name="state"),
        # The claim query: WHERE state = 'pending' AND next_attempt_at <= now.
        Index("ix_summary_queue_due", "state", "next_attempt_at"),
        {"comment": "Work queue: one row per OpenPhone call id to sync."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True,
        comment="OpenPhone call id: AC followed by 1 to 64 ASCII letters or digits (case-sensitive).",
    )
    state: Mapped[str] = mapped_column(
        String(16), server_default="pending",
        comment="pending (due at next_attempt_at), done, failed, absent, not_found, invalid or error.",
    )
    attempts: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Fetches of this item (in-run HTTP retries count once; a run stopped by 401/403 counts none).",
    )
    consecutive_errors: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Attempts in a row that ended with a transient error; reaching the limit gives state error.",
    )
    next_attempt_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(),
        comment="UTC time the item is due; while a run holds the lease, the lease expiry.",
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC end of the current run's lease; NULL when no run holds the item.",
    )
    lease_owner: Mapped[str | None] = mapped_column(
        String(64), comment="Run holding the lease (host:pid:random); NULL when no run holds the item.",
    )
    last_api_status: Mapped[str | None] = mapped_column(
        String(32),
        comment="Last answer: the summary status, 'http <code>' or 'no response'; NULL before the first.",
    )
    last_error: Mapped[str | None] = mapped_column(
        Text, comment="Why the last attempt did not complete (at most 2000 characters); NULL on success.",
    )
    incomplete_since: Mapped[datetime | None] = mapped_column(
        UtcDateTime,
        comment="UTC time the API first said in-progress or absent; the 48 h / 24 h give-up windows start here.",
    )
    enqueued_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(), comment="UTC time the call id was first enqueued.",
    )
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(), comment="UTC time of the last attempt's outcome or re-queue.",
    )
    finished_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the item reached a terminal state; NULL while pending.",
    )


class CallSummary(Base):
    """One row per call whose summary was fetched, with the exact payload."""

    __tablename__ = "call_summaries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(SUMMARY_STATUSES)})", name="status"),
        # Analysts' filters (docs/schema.md).
        Index("ix_call_summaries_status", "status"),
        Index("ix_call_summaries_last_synced_at", "last_synced_at"),
        {"comment": "One row per synced call summary (parent of the call_* tables)."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="OpenPhone call id (same as summary_queue.call_id).",
    )
    status: Mapped[str] = mapped_column(
        String(16), comment="Summary status from the API: completed or failed (absent, in-progress never stored).",
    )
    summary_text: Mapped[str | None] = mapped_column(
        LongText, comment="Summary lines joined by newline; NULL when the API sent null, '' when it sent [].",
    )
    line_count: Mapped[int] = mapped_column(Integer, comment="Number of summary lines (rows in call_summary_lines).")
    next_step_count: Mapped[int] = mapped_column(Integer, comment="Number of next steps (rows in call_next_steps).")
    job_count: Mapped[int] = mapped_column(Integer, comment="Number of jobs (rows in call_jobs).")
    content_hash: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 (hex) of the response body; an unchanged hash skips rewriting the rows.",
    )
    raw_json: Mapped[str] = mapped_column(
        LongText, comment="The response body exactly as received (JSON text), including keys not modelled.",
    )
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the summary was first stored.")
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the summary was last fetched.")


def _parent_fk() -> ForeignKey:
    return ForeignKey("call_summaries.call_id", ondelete="CASCADE")


class CallSummaryLine(Base):
    """The summary's lines, in the API's order."""

    __tablename__ = "call_summary_lines"
    __table_args__ = ({"comment": "Summary lines of a call, position 0 first."},)

    call_id: Mapped[str] = mapped_column(
        CallIdType, _parent_fk(), primary_key=True, comment="The call (call_summaries.call_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the API's summary array.",
    )
    text: Mapped[str] = mapped_column(LongText, comment="The line; NUL and unpaired surrogates become U+FFFD.")


class CallNextStep(Base):
    """The summary's next steps, in the API's order."""

    __tablename__ = "call_next_steps"
    __table_args__ = ({"comment": "Next steps of a call, position 0 first."},)

    call_id: Mapped[str] = mapped_column(
        CallIdType, _parent_fk(), primary_key=True, comment="The call (call_summaries.call_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the API's nextSteps array.",
    )
    text: Mapped[str] = mapped_column(LongText, comment="The next step; NUL and unpaired surrogates become U+FFFD.")


class CallJob(Base):
    """A job (e.g. a Sona form) that ran on the call."""

    __tablename__ = "call_jobs"
    __table_args__ = (
        Index("ix_call_jobs_name", "name", **_NAME_INDEX_KW),
        {"comment": "Jobs of a call's summary, job_position 0 first."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, _parent_fk(), primary_key=True, comment="The call (call_summaries.call_id).",
    )
    job_position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the API's jobs array.",
    )
    name: Mapped[str] = mapped_column(
        LongText, comment="Job name, e.g. 'Lead qualification'; NUL and unpaired surrogates become U+FFFD.",
    )
    icon: Mapped[str] = mapped_column(LongText, comment="Job icon (usually one emoji), as sent.")


class CallJobField(Base):
    """One field of a job's result, typed into the column matching its JSON type."""

    __tablename__ = "call_job_fields"
    __table_args__ = (
        ForeignKeyConstraint(
            ["call_id", "job_position"],
            ["call_jobs.call_id", "call_jobs.job_position"],
            ondelete="CASCADE",
        ),
        CheckConstraint(f"value_type IN ({_in(VALUE_TYPES)})", name="value_type"),
        Index("ix_call_job_fields_name", "name", **_NAME_INDEX_KW),
        {"comment": "Fields of a job's result; exactly one value_* column is set."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="The call (call_jobs.call_id).",
    )
    job_position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="The job (call_jobs.job_position).",
    )
    field_position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the job's result.data array.",
    )
    name: Mapped[str] = mapped_column(
        LongText, comment="Field name, e.g. 'Lead score'; NUL and unpaired surrogates become U+FFFD.",
    )
    value_type: Mapped[str] = mapped_column(
        String(8), comment="JSON type of the value: string, number or boolean; names the value_* column set.",
    )
    value_text: Mapped[str | None] = mapped_column(
        LongText, comment="The value when value_type = 'string' (NUL/unpaired surrogates become U+FFFD), else NULL.",
    )
    value_number: Mapped[float | None] = mapped_column(
        Double, comment="The value when value_type = 'number' (integers too, as a double), else NULL.",
    )
    value_boolean: Mapped[bool | None] = mapped_column(
        Boolean, comment="The value when value_type = 'boolean', else NULL; never a number 0/1 from the API.",
    )


class SyncRun(Base):
    """One row per `etl sync` / `etl backfill` run; an unfinished row is a crashed run."""

    __tablename__ = "sync_runs"
    __table_args__ = ({"comment": "Run history: one row per sync/backfill run."},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True,
        comment="Run number, increasing.",
    )
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the run started.")
    finished_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the run ended; NULL while running or if it crashed.",
    )
    command: Mapped[str] = mapped_column(String(32), comment="The command that ran: sync or backfill.")
    claimed: Mapped[int] = mapped_column(Integer, server_default="0", comment="Queue items the run claimed.")
    completed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended done (summary stored).",
    )
    rescheduled: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items put back as pending with a later next_attempt_at.",
    )
    failed: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Items that ended failed (the API says the summary failed); before revision 0009 also "
                "absent, not_found and invalid.",
    )
    absent: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended absent (revision 0009).",
    )
    not_found: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended not_found (revision 0009).",
    )
    invalid: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended invalid (revision 0009).",
    )
    errors: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended error (gave up, or an unexpected error).",
    )
    fetched: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Items the API answered (200, 400 or 404); 0 with items processed means nothing could be fetched.",
    )
    exit_code: Mapped[int | None] = mapped_column(
        Integer, comment="Process exit code (0 ok, 1 item errors, 3 API refused the key); NULL while running.",
    )
    stop_reason: Mapped[str | None] = mapped_column(
        Text, comment="Why the run stopped early (signal, max runtime, API refused the key); NULL otherwise.",
    )


class RateBudgetRow(Base):
    """The shared rate budget of one API key (etl.budget); times are Unix seconds."""

    __tablename__ = "rate_budgets"
    __table_args__ = ({"comment": "Request schedule shared by every etl process using one API key."},)

    key_hash: Mapped[str] = mapped_column(
        String(64), primary_key=True, comment="SHA-256 (hex) of the API key; the key itself is never stored.",
    )
    next_slot_at: Mapped[float] = mapped_column(
        Double, comment="Unix time before which no further request may be scheduled.",
    )
    paused_until: Mapped[float] = mapped_column(
        Double, comment="Unix time until which a 429's Retry-After pauses every process.",
    )
    slowed_at: Mapped[float] = mapped_column(Double, comment="Unix time of the last 429 slow-down.")
    slowdown: Mapped[float] = mapped_column(
        Double, comment="Fraction of the configured rate set at slowed_at; recovers over time.",
    )
    version: Mapped[int] = mapped_column(
        BigInteger, comment="Incremented by every update (compare-and-set between processes).",
    )


# --- call context and discovery (migration 0004) ------------------------------------

# Ids and numbers of the calls API that are not call ids (PN…, US…, E.164 numbers):
# short in practice, but API text all the same, so the normaliser cuts them to this.
API_ID_LENGTH = 255
CALL_LOOKUP_STATES = ("retrying", "not_found")


class Call(Base):
    """One row per call whose context (``GET /v1/calls/{id}`` or a calls list page) was stored."""

    __tablename__ = "calls"
    __table_args__ = (
        # Analysts' filters (docs/schema.md).
        Index("ix_calls_completed_at", "completed_at"),
        Index("ix_calls_user_id", "user_id"),
        Index("ix_calls_phone_number_id", "phone_number_id"),
        Index("ix_calls_direction", "direction"),
        {"comment": "Call context: one row per OpenPhone call (time, direction, duration, user, line)."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="OpenPhone call id (same as summary_queue.call_id).",
    )
    created_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the call was created (createdAt); NULL if the API sent none.",
    )
    answered_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the call was answered (answeredAt); NULL if never answered.",
    )
    completed_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the call ended (completedAt); NULL while it has not ended.",
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the API last changed the call (updatedAt); NULL if the API sent none.",
    )
    direction: Mapped[str | None] = mapped_column(
        String(16), comment="incoming or outgoing, as sent by the API.",
    )
    status: Mapped[str | None] = mapped_column(
        String(16), comment="Call status as sent (completed, missed, no-answer, in-progress, ...).",
    )
    duration_seconds: Mapped[int | None] = mapped_column(
        Integer, comment="Call duration in seconds (duration); NULL if the API sent none.",
    )
    phone_number_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The OpenPhone line (PN...) the call was on.",
    )
    user_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The OpenPhone user (US...) who placed or received the call.",
    )
    answered_by: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="User (US...) who answered; NULL if nobody did.",
    )
    initiated_by: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="User (US...) who placed an outgoing call; NULL otherwise.",
    )
    forwarded_from: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="Number or user the call was forwarded from, as sent; NULL if not forwarded.",
    )
    forwarded_to: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="Number or user the call was forwarded to, as sent; NULL if not forwarded.",
    )
    participant_count: Mapped[int] = mapped_column(
        Integer, comment="Number of participants (rows in call_participants).",
    )
    content_hash: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 (hex) of raw_json; an unchanged hash skips rewriting the rows.",
    )
    raw_json: Mapped[str] = mapped_column(
        LongText, comment="The call object exactly as received (JSON text), including keys not modelled.",
    )
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the call was first stored.")
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the call was last stored.")


class CallParticipant(Base):
    """The call's participants (external numbers), in the API's order."""

    __tablename__ = "call_participants"
    __table_args__ = (
        Index("ix_call_participants_number", "number"),
        {"comment": "Participants of a call, position 0 first."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True,
        comment="The call (calls.call_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the API's participants array.",
    )
    number: Mapped[str] = mapped_column(
        String(API_ID_LENGTH),
        comment="The participant as sent (E.164 when is_e164); NUL/unpaired surrogates become U+FFFD, cut at 255.",
    )
    is_e164: Mapped[bool] = mapped_column(
        Boolean, comment="Whether number is a valid E.164 number (+ and 8 to 15 digits); kept either way.",
    )


class CallLookup(Base):
    """A call id whose ``GET /v1/calls/{id}`` answered 404: retried for a window, then given up."""

    __tablename__ = "call_lookups"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(CALL_LOOKUP_STATES)})", name="state"),
        {"comment": "Call ids whose call context the API did not find (404): retrying or given up."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="OpenPhone call id (same as summary_queue.call_id).",
    )
    state: Mapped[str] = mapped_column(
        String(16), comment="retrying (inside the not-found window) or not_found (given up: not fetched again).",
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", comment="404 answers received so far.")
    first_not_found_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time of the first 404.")
    last_error: Mapped[str | None] = mapped_column(Text, comment="The last 404's error text (at most 2000 characters).")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time of the last 404.")


class DiscoveryWatermark(Base):
    """Per phone number: conversations updated before this time have been walked."""

    __tablename__ = "discovery_watermarks"
    __table_args__ = ({"comment": "etl discover progress per OpenPhone line."},)

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The OpenPhone line (PN...).",
    )
    phone_number: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The line's number (E.164) when discovery last saw it.",
    )
    conversations_updated_after: Mapped[datetime] = mapped_column(
        UtcDateTime,
        comment="UTC watermark: every conversation updated before it was walked; the next run lists updatedAfter it.",
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the watermark last advanced.")


class DiscoveryConversation(Base):
    """Per (phone number, participant): calls created before this time have been listed."""

    __tablename__ = "discovery_conversations"
    __table_args__ = ({"comment": "etl discover progress per one-to-one conversation."},)

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The OpenPhone line (PN...).",
    )
    participant: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The other party (E.164).",
    )
    conversation_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The conversation (CN...) last walked for this pair.",
    )
    calls_created_after: Mapped[datetime] = mapped_column(
        UtcDateTime,
        comment="UTC watermark: every call created before it was listed; the next run lists createdAfter it.",
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the watermark last advanced.")


class DiscoveryRun(Base):
    """One row per `etl discover` run (or `etl backfill --discover`); an unfinished row is a crashed run."""

    __tablename__ = "discovery_runs"
    __table_args__ = ({"comment": "Discovery history: one row per etl discover run."},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True,
        comment="Run number, increasing.",
    )
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the run started.")
    finished_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the run ended; NULL while running or if it crashed.",
    )
    command: Mapped[str] = mapped_column(String(32), comment="The command that ran: discover or backfill.")
    phone_numbers: Mapped[int] = mapped_column(Integer, server_default="0", comment="Phone numbers walked.")
    conversations: Mapped[int] = mapped_column(Integer, server_default="0", comment="Conversations walked.")
    pages: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Calls list pages committed (with their calls and queue ids).",
    )
    calls_seen: Mapped[int] = mapped_column(Integer, server_default="0", comment="Distinct calls listed.")
    enqueued: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Completed calls newly added to summary_queue.",
    )
    errors: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Walks (a line or a conversation) that stopped on an error.",
    )
    exit_code: Mapped[int | None] = mapped_column(
        Integer,
        comment="Process exit code (0 ok, 1 errors or interrupted, 3 API refused the key); NULL while running.",
    )
    stop_reason: Mapped[str | None] = mapped_column(
        Text, comment="Why the run stopped early or with errors; NULL when it ran to the end cleanly.",
    )
class WebhookDelivery(Base):
    """One row per accepted signed webhook delivery: replay and redelivery detection (etl.webhooks)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Pruning: DELETE ... WHERE received_at < cutoff.
        Index("ix_webhook_deliveries_received_at", "received_at"),
        {"comment": "Signed webhook deliveries accepted by `etl serve`, kept for replay and redelivery checks."},
    )

    message_key: Mapped[str] = mapped_column(
        String(64), primary_key=True,
        comment="sha256 of the signed message (scheme, id, timestamp, signature): the same key again is a replay.",
    )
    event_key: Mapped[str | None] = mapped_column(
        String(64), unique=True,
        comment="sha256 of the event id, on the first delivery of an event only; NULL on redeliveries.",
    )
    event_type: Mapped[str | None] = mapped_column(String(64), comment="The event's type, e.g. call.completed.")
    call_id: Mapped[str | None] = mapped_column(CallIdType, comment="The call the event is about, if valid.")
    scheme: Mapped[str] = mapped_column(
        String(16), comment="Signature scheme: openphone-v1 (legacy header) or standard (Standard Webhooks).",
    )
    outcome: Mapped[str] = mapped_column(
        String(16), comment="queued (queue updated), duplicate (event seen before) or ignored (no action).",
    )
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time in the signature header.")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the delivery was accepted.")
