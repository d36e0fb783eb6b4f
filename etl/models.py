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
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import expression
from sqlalchemy.sql.compiler import SQLCompiler

from etl.config import DEFAULT_WORKSPACE
from etl.ids import CALL_ID_LENGTH as CALL_ID_LENGTH  # defined with the id rule
from etl.states import QUEUE_STATES, SUMMARY_STATUSES, TRANSCRIPT_STATES, TRANSCRIPT_STATUSES

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VALUE_TYPES = ("string", "number", "boolean")

# Ids and numbers of the calls API that are not call ids (PN…, US…, E.164 numbers):
# short in practice, but API text all the same, so the normaliser cuts them to this.
API_ID_LENGTH = 255


# The BI views created by migrations (docs/schema.md); not tables of this metadata.
VIEWS = ("call_job_field_values", "call_summary_overview", "call_overview", "call_transcript_line_overview",
         "contact_number_matches", "call_party_overview", "daily_user_stats", "daily_line_stats")

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

# A workspace's name (etl.workspaces: ASCII letters, digits, '-' and '_'): compared byte for byte, as
# names are case-sensitive and MySQL's default collation is not ("North" and "north" are two workspaces).
WORKSPACE_LENGTH = 64
WorkspaceType = String(WORKSPACE_LENGTH).with_variant(
    mysql.VARCHAR(WORKSPACE_LENGTH, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)
WORKSPACE_COMMENT = ("Workspace the row belongs to (a name of the workspaces file); 'default' without one "
                     "and for rows stored before revision 0015.")


def workspace_column() -> Mapped[str]:
    """The ``workspace`` column every data table ends with (migration 0015, issue 27).

    Last in every table (``sort_order``), as ``ALTER TABLE … ADD COLUMN`` put it on existing
    databases; a row written without one (a bare ``INSERT`` from outside) is in ``default``.
    Where it is part of the primary key the table says so in a :class:`PrimaryKeyConstraint`.
    """
    return mapped_column(WorkspaceType, server_default=DEFAULT_WORKSPACE, sort_order=1000, comment=WORKSPACE_COMMENT)


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


class _QueueColumns:
    """The columns every work queue shares (summary_queue, transcript_queue): one claim/lease/release machinery.

    ``sort_order`` keeps each queue's columns in summary_queue's documented order
    (docs/schema.md), with the per-queue ``call_id``, ``state`` and ``last_api_status`` in between.
    """

    attempts: Mapped[int] = mapped_column(
        Integer, server_default="0", sort_order=2,
        comment="Fetches of this item (in-run HTTP retries count once; a run stopped by 401/403 counts none).",
    )
    consecutive_errors: Mapped[int] = mapped_column(
        Integer, server_default="0", sort_order=3,
        comment="Attempts in a row that ended with a transient error; reaching the limit gives state error.",
    )
    next_attempt_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(), sort_order=4,
        comment="UTC time the item is due; while a run holds the lease, the lease expiry.",
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC end of the current run's lease; NULL when no run holds the item.", sort_order=5,
    )
    lease_owner: Mapped[str | None] = mapped_column(
        String(64), comment="Run holding the lease (host:pid:random); NULL when no run holds the item.", sort_order=6,
    )
    last_error: Mapped[str | None] = mapped_column(
        Text, comment="Why the last attempt did not complete (at most 2000 characters); NULL on success.", sort_order=8,
    )
    incomplete_since: Mapped[datetime | None] = mapped_column(
        UtcDateTime, sort_order=9,
        comment="UTC time the API first said in-progress or absent; the 48 h / 24 h give-up windows start here.",
    )
    enqueued_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(), comment="UTC time the call id was first enqueued.", sort_order=10,
    )
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=sql_utcnow(), sort_order=11,
        comment="UTC time of the last attempt's outcome or re-queue.",
    )
    finished_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the item reached a terminal state; NULL while pending.", sort_order=12,
    )


class SummaryQueue(_QueueColumns, Base):
    """One row per call id to fetch; see docs/contract.md "Queue semantics"."""

    __tablename__ = "summary_queue"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(QUEUE_STATES)})", name="state"),
        # The claim query: WHERE workspace = :w AND state = 'pending' AND next_attempt_at <= now.
        Index("ix_summary_queue_due", "workspace", "state", "next_attempt_at"),
        {"comment": "Work queue: one row per OpenPhone call id to sync."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True,
        comment="OpenPhone call id: AC followed by 1 to 64 ASCII letters or digits (case-sensitive).",
    )
    state: Mapped[str] = mapped_column(
        String(16), server_default="pending", sort_order=1,
        comment="pending (due at next_attempt_at), done, failed, absent, not_found, invalid or error.",
    )
    last_api_status: Mapped[str | None] = mapped_column(
        String(32), sort_order=7,
        comment="Last answer: the summary status, 'http <code>' or 'no response'; NULL before the first.",
    )
    workspace: Mapped[str] = workspace_column()


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
    # Migration 0007: what the dated API (2026-03-30) adds; NULL for summaries fetched on v1.
    type: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH),
        comment="Who the summary is of (dated API): human (a person's call) or agent (the AI agent's); NULL on v1.",
    )
    title: Mapped[str | None] = mapped_column(
        LongText, comment="The summary's title (dated API, agent summaries); NULL on v1 or when the API sent none.",
    )
    # On the dated API the "response body" below is the call's summary object (docs/schema.md).
    content_hash: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 (hex) of the response body; an unchanged hash skips rewriting the rows.",
    )
    raw_json: Mapped[str] = mapped_column(
        LongText, comment="The response body exactly as received (JSON text), including keys not modelled.",
    )
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the summary was first stored.")
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the summary was last fetched.")
    # Migration 0014 (issue 25): the newer summary wins, whichever way it arrives.
    as_of: Mapped[datetime | None] = mapped_column(
        UtcDateTime,
        comment="UTC time the stored summary is as of: when the API answered (sync, discovery) or the webhook "
                "event's createdAt; an older one is not written over it. NULL for rows stored before 0014.",
    )
    workspace: Mapped[str] = workspace_column()


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
    workspace: Mapped[str] = workspace_column()


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
    workspace: Mapped[str] = workspace_column()


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
    workspace: Mapped[str] = workspace_column()


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
    workspace: Mapped[str] = workspace_column()


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
    command: Mapped[str] = mapped_column(
        String(32), comment="The command that ran: sync, backfill, serve (the webhook receiver) or demo.",
    )
    claimed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Summary items the run claimed (before revision 0013: transcripts too).",
    )
    completed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items that ended done (summary stored).",
    )
    rescheduled: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Items put back as pending with a later next_attempt_at.",
    )
    failed: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Summary items that ended failed (the API says the summary failed); before revision 0009 "
                "also absent, not_found and invalid, before 0013 also transcripts.",
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
        comment="Summary items the API answered (200, 400 or 404); 0 with items processed means nothing could "
                "be fetched.",
    )
    transcripts_claimed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items the run claimed (revision 0013).",
    )
    transcripts_completed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended done (revision 0013).",
    )
    transcripts_rescheduled: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items put back as pending (revision 0013).",
    )
    transcripts_failed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended failed (revision 0013).",
    )
    transcripts_forbidden: Mapped[int] = mapped_column(
        Integer, server_default="0",
        comment="Transcript items that ended forbidden: the plan has no transcripts (revision 0013).",
    )
    transcripts_absent: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended absent (revision 0013).",
    )
    transcripts_not_found: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended not_found (revision 0013).",
    )
    transcripts_invalid: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended invalid (revision 0013).",
    )
    transcripts_errors: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items that ended error (revision 0013).",
    )
    transcripts_fetched: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Transcript items the API answered (revision 0013).",
    )
    exit_code: Mapped[int | None] = mapped_column(
        Integer, comment="Process exit code (0 ok, 1 item errors, 3 API refused the key, 4 API never reached); "
                         "NULL while running.",
    )
    stop_reason: Mapped[str | None] = mapped_column(
        Text, comment="Why the run stopped early (signal, max runtime, API refused the key); NULL otherwise.",
    )
    workspace: Mapped[str] = workspace_column()


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
    # Migration 0007: what the dated API (2026-03-30) adds; NULL for calls stored from v1.
    actor_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH),
        comment="Who handled the call (dated API actorId): a user (US...) or a system actor such as the AI agent "
                "(SYU...); NULL on v1.",
    )
    call_route: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="How the call was routed (dated API callRoute): phone-number or phone-menu.",
    )
    ai_handled: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH),
        comment="ai-agent when the AI agent handled the call (dated API aiHandled); NULL otherwise and on v1.",
    )
    participant_count: Mapped[int] = mapped_column(
        Integer, comment="Number of participants (rows in call_participants).",
    )
    content_hash: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 (hex) of raw_json; an unchanged hash skips rewriting the rows.",
    )
    # On the dated API the call object is stored without its summary (in call_summaries; docs/schema.md).
    raw_json: Mapped[str] = mapped_column(
        LongText, comment="The call object exactly as received (JSON text), including keys not modelled.",
    )
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the call was first stored.")
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the call was last stored.")
    workspace: Mapped[str] = workspace_column()


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
    # Migration 0007: the dated API lists every party with its actor; NULL for v1 participants.
    actor_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The party's actor (dated API): a user (US...) or system actor (SYU...); "
                                       "NULL for an outside party and on v1.",
    )
    is_own_number: Mapped[bool | None] = mapped_column(
        Boolean, comment="Whether number is the workspace's own (it appears with an actor in the call; dated API); "
                         "NULL on v1, whose participants are the other parties only.",
    )
    workspace: Mapped[str] = workspace_column()


class CallVoicemail(Base):
    """A voicemail left on a call (dated API, ``include=voicemail``): migration 0007."""

    __tablename__ = "call_voicemails"
    __table_args__ = ({"comment": "Voicemails left on calls (dated API include=voicemail); one per call."},)

    call_id: Mapped[str] = mapped_column(
        CallIdType, ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True,
        comment="The call (calls.call_id).",
    )
    voicemail_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The voicemail's id (VM...).")
    status: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="completed or in-progress, as sent.",
    )
    duration_seconds: Mapped[int | None] = mapped_column(Integer, comment="Length of the voicemail in seconds.")
    recording_url: Mapped[str | None] = mapped_column(
        Text, comment="URL of the recording as sent (it may be signed and expire).",
    )
    transcript: Mapped[str | None] = mapped_column(
        LongText, comment="The voicemail's transcript; NULL while none is available.",
    )
    workspace: Mapped[str] = workspace_column()


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
    workspace: Mapped[str] = workspace_column()


class DiscoveryWatermark(Base):
    """Per phone number: conversations updated before this time have been walked."""

    __tablename__ = "discovery_watermarks"
    __table_args__ = (
        # Progress is the workspace's own, not the line's: the key names the workspace.
        PrimaryKeyConstraint("workspace", "phone_number_id"),
        {"comment": "etl discover progress per OpenPhone line."},
    )

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), comment="The OpenPhone line (PN...).",
    )
    phone_number: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The line's number (E.164) when discovery last saw it.",
    )
    conversations_updated_after: Mapped[datetime] = mapped_column(
        UtcDateTime,
        comment="UTC watermark: every conversation updated before it was walked; the next run lists updatedAfter it.",
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the watermark last advanced.")
    workspace: Mapped[str] = workspace_column()


class DiscoveryConversation(Base):
    """Per (phone number, participant): calls created before this time have been listed."""

    __tablename__ = "discovery_conversations"
    __table_args__ = (
        PrimaryKeyConstraint("workspace", "phone_number_id", "participant"),
        {"comment": "etl discover progress per one-to-one conversation."},
    )

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), comment="The OpenPhone line (PN...).",
    )
    participant: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), comment="The other party (E.164).",
    )
    conversation_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The conversation (CN...) last walked for this pair.",
    )
    calls_created_after: Mapped[datetime] = mapped_column(
        UtcDateTime,
        comment="UTC watermark: every call created before it was listed; the next run lists createdAfter it.",
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the watermark last advanced.")
    workspace: Mapped[str] = workspace_column()


class DiscoveryCallWatermark(Base):
    """Per scope of a dated-API discovery: calls created before this time have been listed (migration 0007)."""

    __tablename__ = "discovery_call_watermarks"
    __table_args__ = (
        # '*' is "the whole workspace": every workspace has its own.
        PrimaryKeyConstraint("workspace", "scope"),
        {"comment": "etl discover progress on the dated API (GET /calls), per scope."},
    )

    scope: Mapped[str] = mapped_column(
        String(API_ID_LENGTH),
        comment="What was listed: * for the whole workspace, or one line's id (PN...) for --phone-number.",
    )
    calls_created_since: Mapped[datetime] = mapped_column(
        UtcDateTime,
        comment="UTC watermark: every call created before it was listed and committed; "
                "the next run lists createdAt[gte] it (less the overlap).",
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the watermark last advanced.")
    workspace: Mapped[str] = workspace_column()


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
    command: Mapped[str] = mapped_column(
        String(32), comment="The command that ran: discover, backfill or demo.",
    )
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
    workspace: Mapped[str] = workspace_column()
class WebhookDelivery(Base):
    """One row per accepted signed webhook delivery: replay and redelivery detection (etl.webhooks)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Pruning: DELETE ... WHERE received_at < cutoff.
        Index("ix_webhook_deliveries_received_at", "received_at"),
        # A workspace's receiver checks replays and redeliveries among its own deliveries.
        PrimaryKeyConstraint("workspace", "message_key"),
        UniqueConstraint("workspace", "event_key"),
        {"comment": "Signed webhook deliveries accepted by `etl serve`, kept for replay and redelivery checks."},
    )

    message_key: Mapped[str] = mapped_column(
        String(64),
        comment="sha256 of the signed message (scheme, id, timestamp, signature): the same key again is a replay.",
    )
    event_key: Mapped[str | None] = mapped_column(
        String(64),
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
    workspace: Mapped[str] = workspace_column()


# --- transcripts (migration 0008, issue 19) ------------------------------------------

class TranscriptQueue(_QueueColumns, Base):
    """One row per call whose transcript is to be fetched (``transcripts`` setting on)."""

    __tablename__ = "transcript_queue"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(TRANSCRIPT_STATES)})", name="state"),
        # The claim query: WHERE workspace = :w AND state = 'pending' AND next_attempt_at <= now.
        Index("ix_transcript_queue_due", "workspace", "state", "next_attempt_at"),
        {"comment": "Work queue of transcripts: one row per OpenPhone call id whose transcript to sync."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True,
        comment="OpenPhone call id: AC followed by 1 to 64 ASCII letters or digits (case-sensitive).",
    )
    state: Mapped[str] = mapped_column(
        String(16), server_default="pending", sort_order=1,
        comment="pending (due at next_attempt_at), done, failed, absent, forbidden, not_found, invalid or error.",
    )
    last_api_status: Mapped[str | None] = mapped_column(
        String(32), sort_order=7,
        comment="Last answer: the transcript status, 'http <code>' or 'no response'; NULL before the first.",
    )
    workspace: Mapped[str] = workspace_column()


class CallTranscript(Base):
    """One row per transcript segment of a call (v1: one merged segment ``merged``)."""

    __tablename__ = "call_transcripts"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(TRANSCRIPT_STATUSES)})", name="status"),
        Index("ix_call_transcripts_created_at", "created_at"),
        {"comment": "Transcripts of calls: one row per recording segment (v1: one merged row per call)."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="OpenPhone call id (same as transcript_queue.call_id).",
    )
    segment_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True,
        comment="The recording (CR...) of the segment on the 2026-03-30 API; 'merged' for a v1 transcript.",
    )
    status: Mapped[str] = mapped_column(
        String(16), comment="Transcript status from the API: completed, failed, absent or in-progress.",
    )
    started_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC start of the segment (startTime); NULL for a v1 transcript, which has none.",
    )
    created_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the API created the transcript (createdAt); NULL if it sent none.",
    )
    duration_seconds: Mapped[float | None] = mapped_column(
        Double, comment="Duration of the transcribed audio in seconds (duration); NULL if the API sent none.",
    )
    offset_seconds: Mapped[float] = mapped_column(
        Double, comment="Seconds from the call's start to this segment's start, added to its lines' offsets (v1: 0).",
    )
    line_count: Mapped[int] = mapped_column(
        Integer, comment="Dialogue lines the API sent (rows in call_transcript_lines until pruned).",
    )
    content_hash: Mapped[str] = mapped_column(
        String(64),
        comment="SHA-256 (hex) of the call's whole transcript and its time base; unchanged: rows not rewritten.",
    )
    pruned_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time `etl prune` deleted the lines; NULL while they are kept. Never refilled.",
    )
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the segment was first stored.")
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the segment was last fetched.")
    workspace: Mapped[str] = workspace_column()


class CallTranscriptLine(Base):
    """One line of dialogue, with offsets in seconds from the call's start on both API surfaces."""

    __tablename__ = "call_transcript_lines"
    __table_args__ = (
        ForeignKeyConstraint(
            ["call_id", "segment_id"],
            ["call_transcripts.call_id", "call_transcripts.segment_id"],
            ondelete="CASCADE",
        ),
        {"comment": "Transcript dialogue lines of a call, per segment, position 0 first."},
    )

    call_id: Mapped[str] = mapped_column(
        CallIdType, primary_key=True, comment="The call (call_transcripts.call_id).",
    )
    segment_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The segment (call_transcripts.segment_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the segment's dialogue array.",
    )
    identifier: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The speaker's phone number as sent (identifier); NULL if none.",
    )
    user_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH),
        comment="The workspace user (v1 userId) or actor (actorId) who spoke; NULL for an external party.",
    )
    start_seconds: Mapped[float] = mapped_column(
        Double, comment="When the line starts, in seconds from the call's start (both API surfaces).",
    )
    end_seconds: Mapped[float] = mapped_column(
        Double, comment="When the line ends, in seconds from the call's start (both API surfaces).",
    )
    text: Mapped[str] = mapped_column(LongText, comment="What was said; NUL and unpaired surrogates become U+FFFD.")
    workspace: Mapped[str] = workspace_column()


# --- users, lines and contacts (migration 0012, issue 24) ----------------------------

# Why a row has gone_at set: a complete listing no longer returned it, or a contact.deleted webhook said so.
GONE_REASONS = ("unlisted", "deleted")
# The value types of a contact's custom field row (call_job_fields' three, plus a JSON object and no value).
CONTACT_VALUE_TYPES = ("string", "number", "boolean", "json", "null")
DIMENSION_RESOURCES = ("users", "lines", "contacts")


class _SeenColumns:
    """What every users / phone_numbers / contacts row shares: its content hash, raw JSON and when it was seen."""

    content_hash: Mapped[str] = mapped_column(
        String(64), sort_order=90,
        comment="SHA-256 (hex) of the row's content and its child rows; unchanged: only last_seen_at moves.",
    )
    raw_json: Mapped[str] = mapped_column(
        LongText, sort_order=91, comment="The object exactly as the API listed it (JSON text), keys not modelled too.",
    )
    first_seen_at: Mapped[datetime] = mapped_column(
        UtcDateTime, sort_order=92, comment="UTC time a refresh (or webhook) first stored the row.",
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        UtcDateTime, sort_order=93, comment="UTC time a listing (or webhook) last returned the row.",
    )
    gone_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, sort_order=94,
        comment="UTC time a complete listing first no longer returned it (or it was deleted); NULL while present. "
                "The row is kept, so history keeps its name.",
    )


class User(_SeenColumns, Base):
    """A person in the workspace (``US…``): ``GET /v1/users`` or ``GET /users``."""

    __tablename__ = "users"
    __table_args__ = ({"comment": "Workspace users (US...): names and emails beside every call."},)

    user_id: Mapped[str] = mapped_column(String(API_ID_LENGTH), primary_key=True, comment="The user's id (US...).")
    name: Mapped[str | None] = mapped_column(
        LongText, comment="first_name and last_name joined by a space; NULL when the API sent neither.",
    )
    email: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The user's email, as sent.")
    first_name: Mapped[str | None] = mapped_column(LongText, comment="firstName, after text cleaning.")
    last_name: Mapped[str | None] = mapped_column(LongText, comment="lastName, after text cleaning.")
    role: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="owner, admin or member (others kept as sent).",
    )
    group_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="groupId, when the API sends one.")
    picture_url: Mapped[str | None] = mapped_column(Text, comment="pictureUrl as sent; NULL when none.")
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, comment="UTC createdAt of the user.")
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, comment="UTC updatedAt of the user.")
    workspace: Mapped[str] = workspace_column()


class PhoneNumber(_SeenColumns, Base):
    """One of the workspace's own lines (``PN…``), e.g. "Sales"."""

    __tablename__ = "phone_numbers"
    __table_args__ = ({"comment": "The workspace's own phone numbers (lines, PN...): name and number."},)

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The line's id (PN...), as in calls.phone_number_id.",
    )
    name: Mapped[str | None] = mapped_column(LongText, comment="The line's label, e.g. Sales, after text cleaning.")
    number: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The line's number in E.164 (v1 number, dated phoneNumber).",
    )
    formatted_number: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="formattedNumber as sent, e.g. (555) 000-0001.",
    )
    symbol: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The line's symbol (an emoji).")
    group_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="groupId, when the API sends one.")
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, comment="UTC createdAt of the line.")
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, comment="UTC updatedAt of the line.")
    workspace: Mapped[str] = workspace_column()


class PhoneNumberUser(Base):
    """Who is on a line, as the line's listing last named them (replaced as a whole with the line)."""

    __tablename__ = "phone_number_users"
    __table_args__ = (
        Index("ix_phone_number_users_user_id", "user_id"),
        {"comment": "Members of each line (users on phone_numbers), as the last listing named them."},
    )

    phone_number_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), ForeignKey("phone_numbers.phone_number_id", ondelete="CASCADE"), primary_key=True,
        comment="The line (phone_numbers.phone_number_id).",
    )
    user_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), primary_key=True, comment="The member (users.user_id; no foreign key).",
    )
    position: Mapped[int] = mapped_column(Integer, comment="0-based position in the line's users array.")
    email: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The member's email as the line lists it.")
    role: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The member's role as the line lists it.")
    workspace: Mapped[str] = workspace_column()


class Contact(_SeenColumns, Base):
    """A person outside the workspace: ``GET /v1/contacts`` and the ``contact.*`` webhooks."""

    __tablename__ = "contacts"
    __table_args__ = (
        CheckConstraint(f"gone_reason IN ({_in(GONE_REASONS)})", name="gone_reason"),
        {"comment": "Contacts (people outside the workspace): names and companies of the other parties."},
    )

    contact_id: Mapped[str] = mapped_column(String(API_ID_LENGTH), primary_key=True, comment="The contact's id.")
    name: Mapped[str | None] = mapped_column(
        LongText, comment="first_name and last_name joined by a space; NULL when the API sent neither.",
    )
    first_name: Mapped[str | None] = mapped_column(LongText, comment="defaultFields.firstName, after text cleaning.")
    last_name: Mapped[str | None] = mapped_column(LongText, comment="defaultFields.lastName, after text cleaning.")
    company: Mapped[str | None] = mapped_column(LongText, comment="defaultFields.company, after text cleaning.")
    role: Mapped[str | None] = mapped_column(LongText, comment="defaultFields.role, after text cleaning.")
    external_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="externalId (a CRM's id).")
    source: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="Where the contact came from (public-api, a CRM); NULL for app contacts.",
    )
    source_url: Mapped[str | None] = mapped_column(Text, comment="sourceUrl as sent.")
    created_by_user_id: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="The user (US...) who created the contact.",
    )
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, comment="UTC createdAt of the contact.")
    updated_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC updatedAt of the contact; the newest wins when a number is on several contacts.",
    )
    gone_reason: Mapped[str | None] = mapped_column(
        String(16), sort_order=95,
        comment="unlisted (a complete listing no longer returned it) or deleted (contact.deleted); NULL while present.",
    )
    workspace: Mapped[str] = workspace_column()


def _contact_fk() -> ForeignKey:
    return ForeignKey("contacts.contact_id", ondelete="CASCADE")


class ContactPhoneNumber(Base):
    """A contact's phone numbers, in the API's order, with the E.164 form the calls are matched on."""

    __tablename__ = "contact_phone_numbers"
    __table_args__ = (
        Index("ix_contact_phone_numbers_number_e164", "number_e164"),
        {"comment": "Phone numbers of a contact, position 0 first; number_e164 matches call_participants.number."},
    )

    contact_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), _contact_fk(), primary_key=True, comment="The contact (contacts.contact_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in defaultFields.phoneNumbers.",
    )
    label: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The number's name, e.g. mobile.")
    value: Mapped[str] = mapped_column(String(API_ID_LENGTH), comment="The number as sent, after text cleaning.")
    number_e164: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH), comment="value as E.164 (docs/schema.md: Matching); NULL when it cannot be read as one.",
    )
    value_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The value's id, as sent.")
    workspace: Mapped[str] = workspace_column()


class ContactEmail(Base):
    """A contact's emails, in the API's order."""

    __tablename__ = "contact_emails"
    __table_args__ = ({"comment": "Emails of a contact, position 0 first."},)

    contact_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), _contact_fk(), primary_key=True, comment="The contact (contacts.contact_id).",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in defaultFields.emails.",
    )
    label: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The email's name, e.g. work.")
    value: Mapped[str] = mapped_column(LongText, comment="The email as sent, after text cleaning.")
    value_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The value's id, as sent.")
    workspace: Mapped[str] = workspace_column()


class ContactCustomField(Base):
    """One value of a contact's custom field, typed into the column matching its JSON type.

    A multi-select field has one row per selected value (``value_position`` 0, 1, …); every other
    field one row at ``value_position`` 0 (``value_type`` ``null`` when it has no value).
    """

    __tablename__ = "contact_custom_fields"
    __table_args__ = (
        CheckConstraint(f"value_type IN ({_in(CONTACT_VALUE_TYPES)})", name="value_type"),
        {"comment": "Custom fields of a contact: one row per value (multi-select: one per selected value)."},
    )

    contact_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH), _contact_fk(), primary_key=True, comment="The contact (contacts.contact_id).",
    )
    field_position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="0-based position in the customFields array.",
    )
    value_position: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False,
        comment="0-based position of the value in a multi-select's list; 0 for every other field.",
    )
    field_key: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The field's key, as sent.")
    field_id: Mapped[str | None] = mapped_column(String(API_ID_LENGTH), comment="The field's id, as sent.")
    name: Mapped[str | None] = mapped_column(LongText, comment="The field's name, e.g. Plan, after text cleaning.")
    field_type: Mapped[str | None] = mapped_column(
        String(API_ID_LENGTH),
        comment="The API's type: address, boolean, date, multi-select, number, string or url (others as sent).",
    )
    value_type: Mapped[str] = mapped_column(
        String(8), comment="string, number, boolean, json (an object or list as JSON text) or null (no value).",
    )
    value_text: Mapped[str | None] = mapped_column(
        LongText, comment="The value when value_type is string (dates and urls too) or json, else NULL.",
    )
    value_number: Mapped[float | None] = mapped_column(
        Double, comment="The value when value_type = 'number', else NULL.",
    )
    value_boolean: Mapped[bool | None] = mapped_column(
        Boolean, comment="The value when value_type = 'boolean', else NULL.",
    )
    workspace: Mapped[str] = workspace_column()


class DimensionRefresh(Base):
    """One row per refresh of users, lines or contacts: what it cost and what it found."""

    __tablename__ = "dimension_refreshes"
    __table_args__ = (
        # The newest refresh of a resource in a workspace (etl status, the contacts schedule).
        Index("ix_dimension_refreshes_resource", "workspace", "resource", "started_at"),
        {"comment": "History of users / lines / contacts refreshes: requests spent, rows seen, new, changed, gone."},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True,
        comment="Refresh number, increasing.",
    )
    resource: Mapped[str] = mapped_column(String(16), comment="users, lines or contacts.")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time the refresh started.")
    finished_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="UTC time the refresh ended; NULL while running or if it crashed.",
    )
    updated_since: Mapped[datetime | None] = mapped_column(
        UtcDateTime, comment="Incremental refresh: only rows updated since this UTC time were asked; NULL: all.",
    )
    requests: Mapped[int] = mapped_column(Integer, server_default="0", comment="API requests the listing cost.")
    rows_seen: Mapped[int] = mapped_column(Integer, server_default="0", comment="Rows the listing returned.")
    rows_new: Mapped[int] = mapped_column(Integer, server_default="0", comment="Rows stored for the first time.")
    rows_changed: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Rows stored before whose content changed.",
    )
    rows_gone: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="Rows a complete listing no longer returned (marked gone now).",
    )
    complete: Mapped[bool] = mapped_column(
        Boolean, comment="Whether the listing was the whole set (then rows it did not return were marked gone).",
    )
    problem: Mapped[str | None] = mapped_column(
        Text, comment="Why the listing is incomplete or unavailable (at most 2000 characters); NULL when fine.",
    )
    workspace: Mapped[str] = workspace_column()


# --- rejected records (migration 0014, issue 25) --------------------------------------

class RejectedRecord(Base):
    """A record the API sent that could not be stored (a date no database holds, a malformed field, a
    database refusal): kept, with why, where an operator finds it, instead of stalling the queue or
    vanishing.  The same record again only moves ``last_seen_at`` and ``times``."""

    __tablename__ = "rejected_records"
    __table_args__ = (
        Index("ix_rejected_records_last_seen_at", "last_seen_at"),
        # record_id may be '' (a record without one): not a global id, so the workspace is in the key.
        PrimaryKeyConstraint("workspace", "source", "endpoint", "record_id"),
        {"comment": "API records that could not be stored, with the reason; `etl status` counts them."},
    )

    source: Mapped[str] = mapped_column(
        String(32),
        comment="What met the record: sync, discover, backfill or serve.",
    )
    endpoint: Mapped[str] = mapped_column(
        String(64),
        comment="Which answer it came in, e.g. 'GET /v1/calls/{id}', 'GET /calls' or 'webhook call.completed'.",
    )
    record_id: Mapped[str] = mapped_column(
        String(API_ID_LENGTH),
        comment="The record's id as sent (cleaned, cut to 255 characters); '' when it had none.",
    )
    reason: Mapped[str] = mapped_column(
        Text, comment="Why it was not stored, e.g. 'createdAt: 0001-01-01T00:00:00+01:00 is outside 1970-2199'.",
    )
    payload: Mapped[str] = mapped_column(
        LongText, comment="The record as received, as storable JSON (non-ASCII escaped where needed).",
    )
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time it was first refused.")
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="UTC time it was last refused.")
    times: Mapped[int] = mapped_column(Integer, comment="How many times it was refused.")
    workspace: Mapped[str] = workspace_column()
