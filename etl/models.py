"""SQLAlchemy models: the tables of SPEC.md, the BI contract.

Every timestamp is a naive UTC ``DATETIME`` (microsecond precision on every
database).  Long text is ``TEXT`` on SQLite/PostgreSQL and ``LONGTEXT`` on
MySQL/MariaDB, whose plain ``TEXT`` stops at 64 KiB.  Call ids are compared
byte for byte (``ascii_bin`` on MySQL, whose default collation is
case-insensitive and would merge ``ACab`` with ``ACAB``).
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

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUEUE_STATES = ("pending", "done", "failed", "absent", "not_found", "invalid", "error")
TERMINAL_STATES = tuple(s for s in QUEUE_STATES if s != "pending")
SUMMARY_STATUSES = ("absent", "in-progress", "completed", "failed")
VALUE_TYPES = ("string", "number", "boolean")

CALL_ID_LENGTH = 66  # "AC" + at most 64 letters or digits (SPEC.md)

CallIdType = String(CALL_ID_LENGTH).with_variant(
    mysql.VARCHAR(CALL_ID_LENGTH, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
UtcDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class utcnow(expression.FunctionElement[datetime]):
    """The database's current UTC time, for server-side defaults."""

    type = DateTime()
    inherit_cache = True


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "timezone('utc', statement_timestamp())"


@compiles(utcnow, "mysql")
@compiles(utcnow, "mariadb")
def _utcnow_mysql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SummaryQueue(Base):
    """One row per call id to fetch; see SPEC.md "Queue semantics"."""

    __tablename__ = "summary_queue"
    __table_args__ = (
        CheckConstraint(f"state IN ({_in(QUEUE_STATES)})", name="state"),
        # The claim query: WHERE state = 'pending' AND next_attempt_at <= now.
        Index("ix_summary_queue_due", "state", "next_attempt_at"),
        {"comment": "Work queue: one row per OpenPhone call id to sync."},
    )

    call_id: Mapped[str] = mapped_column(CallIdType, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    consecutive_errors: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=utcnow())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    last_api_status: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    incomplete_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enqueued_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=utcnow())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class CallSummary(Base):
    """One row per call whose summary was fetched, with the exact payload."""

    __tablename__ = "call_summaries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(SUMMARY_STATUSES)})", name="status"),
        {"comment": "One row per synced call summary (parent of the call_* tables)."},
    )

    call_id: Mapped[str] = mapped_column(CallIdType, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    summary_text: Mapped[str | None] = mapped_column(LongText)
    line_count: Mapped[int] = mapped_column(Integer)
    next_step_count: Mapped[int] = mapped_column(Integer)
    job_count: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    raw_json: Mapped[str] = mapped_column(LongText)
    first_synced_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_synced_at: Mapped[datetime] = mapped_column(UtcDateTime)


def _parent_fk() -> ForeignKey:
    return ForeignKey("call_summaries.call_id", ondelete="CASCADE")


class CallSummaryLine(Base):
    """The summary's lines, in the API's order."""

    __tablename__ = "call_summary_lines"
    __table_args__ = ({"comment": "Summary lines of a call, position 0 first."},)

    call_id: Mapped[str] = mapped_column(CallIdType, _parent_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(LongText)


class CallNextStep(Base):
    """The summary's next steps, in the API's order."""

    __tablename__ = "call_next_steps"
    __table_args__ = ({"comment": "Next steps of a call, position 0 first."},)

    call_id: Mapped[str] = mapped_column(CallIdType, _parent_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(LongText)


class CallJob(Base):
    """A job (e.g. a Sona form) that ran on the call."""

    __tablename__ = "call_jobs"
    __table_args__ = ({"comment": "Jobs of a call's summary, job_position 0 first."},)

    call_id: Mapped[str] = mapped_column(CallIdType, _parent_fk(), primary_key=True)
    job_position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(LongText)
    icon: Mapped[str] = mapped_column(LongText)


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
        {"comment": "Fields of a job's result; exactly one value_* column is set."},
    )

    call_id: Mapped[str] = mapped_column(CallIdType, primary_key=True)
    job_position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    field_position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(LongText)
    value_type: Mapped[str] = mapped_column(String(8))
    value_text: Mapped[str | None] = mapped_column(LongText)
    value_number: Mapped[float | None] = mapped_column(Double)
    value_boolean: Mapped[bool | None] = mapped_column(Boolean)


class SyncRun(Base):
    """One row per `etl sync` / `etl backfill` run; an unfinished row is a crashed run."""

    __tablename__ = "sync_runs"
    __table_args__ = ({"comment": "Run history: one row per sync/backfill run."},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    command: Mapped[str] = mapped_column(String(32))
    claimed: Mapped[int] = mapped_column(Integer, server_default="0")
    completed: Mapped[int] = mapped_column(Integer, server_default="0")
    rescheduled: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    errors: Mapped[int] = mapped_column(Integer, server_default="0")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(Text)
