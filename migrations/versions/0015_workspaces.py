"""workspaces: every data table knows its workspace, and every view shows it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10

Issue 27: one database serves several workspaces.  Every data table gains
``workspace`` (the workspaces file's name; NOT NULL, default ``'default'``), so
existing rows and rows a bare ``INSERT`` makes land in ``default`` with nothing
else changed.  ``rate_budgets`` is left alone: it is per API key (its hash), and
a key's budget is shared whatever workspace spends it.

Call, user, line and contact ids are global API ids: their keys stay.  Keys
that are not a global id gain the workspace: the discovery watermarks
(``discovery_call_watermarks.scope = '*'`` is "the whole workspace"),
``webhook_deliveries`` (its message and event keys, checked per receiver) and
``rejected_records`` (whose ``record_id`` may be ``''``).  The claim indexes of
both queues and the refresh index lead with ``workspace``.  Every view is
recreated with ``workspace`` as its last column (the existing columns keep
their place); a number is matched to a contact of the call's own workspace.

The new column is appended (``ALTER TABLE … ADD COLUMN``: no table rebuild on
any of the three databases, a constant default); only the few small tables whose
key changes are rebuilt on SQLite.  The downgrade drops the column.  It refuses
(unless ``-x allow-data-loss=1``) while a row is outside ``default``: going back
would merge the workspaces' rows.  Allowed, it keeps one row per old key (the
``default`` one first) where the old key would collide.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import context, op
from alembic.operations import BatchOperations
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import SAWarning

from etl.errors import DatabaseError

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEFAULT = 'default'
_WORKSPACE = sa.String(length=64).with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=64), 'mariadb').with_variant(mysql.VARCHAR(charset='ascii', collation='ascii_bin', length=64), 'mysql')
_COMMENT = ("Workspace the row belongs to (a name of the workspaces file); 'default' without one "
            "and for rows stored before revision 0015.")

# Every data table of revision 0014 (not rate_budgets: per API key), children after parents.
_TABLES = (
    'summary_queue', 'call_summaries', 'call_summary_lines', 'call_next_steps', 'call_jobs', 'call_job_fields',
    'sync_runs', 'calls', 'call_participants', 'call_voicemails', 'call_lookups', 'discovery_watermarks',
    'discovery_conversations', 'discovery_call_watermarks', 'discovery_runs', 'webhook_deliveries',
    'transcript_queue', 'call_transcripts', 'call_transcript_lines', 'users', 'phone_numbers', 'phone_number_users',
    'contacts', 'contact_phone_numbers', 'contact_emails', 'contact_custom_fields', 'dimension_refreshes',
    'rejected_records',
)
# Keys that are not a global API id: (table, key before, key after).
_KEYS = (
    ('discovery_watermarks', ('phone_number_id',), ('workspace', 'phone_number_id')),
    ('discovery_conversations', ('phone_number_id', 'participant'), ('workspace', 'phone_number_id', 'participant')),
    ('discovery_call_watermarks', ('scope',), ('workspace', 'scope')),
    ('webhook_deliveries', ('message_key',), ('workspace', 'message_key')),
    ('rejected_records', ('source', 'endpoint', 'record_id'), ('workspace', 'source', 'endpoint', 'record_id')),
)
# webhook_deliveries' unique event key: (name, columns) before and after.
_UNIQUE_BEFORE = ('uq_webhook_deliveries_event_key', ('event_key',))
_UNIQUE_AFTER = ('uq_webhook_deliveries_workspace_event_key', ('workspace', 'event_key'))
# Indexes that lead with the workspace: (name, table, columns before, columns after).
_INDEXES = (
    ('ix_summary_queue_due', 'summary_queue', ('state', 'next_attempt_at'), ('workspace', 'state', 'next_attempt_at')),
    ('ix_transcript_queue_due', 'transcript_queue', ('state', 'next_attempt_at'),
     ('workspace', 'state', 'next_attempt_at')),
    ('ix_dimension_refreshes_resource', 'dimension_refreshes', ('resource', 'started_at'),
     ('workspace', 'resource', 'started_at')),
)
_VIEWS = ('daily_line_stats', 'daily_user_stats', 'call_party_overview', 'contact_number_matches', 'call_overview',
          'call_transcript_line_overview', 'call_summary_overview', 'call_job_field_values')


def _revision(file_name: str) -> ModuleType:
    """An earlier revision's module, for its view texts and dialect pieces (one spelling of each).

    Loaded from its file: a revision module's name starts with a digit and is not importable.
    """
    spec = importlib.util.spec_from_file_location(f"_rev_{file_name[:4]}", Path(__file__).with_name(file_name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dialect() -> str:
    return op.get_context().dialect.name


# --- the views ------------------------------------------------------------------------

def _append(view: str, column: str) -> str:
    """``view``'s text with ``column`` added as its last column (before its first top-level FROM)."""
    select, rest = view.split("\nFROM ", 1)
    return f"{select},\n       {column}\nFROM {rest}"


# A number stands for a contact of the call's own workspace (docs/schema.md "Matching", per workspace).
def _pick_contact(number: str, workspace: str) -> str:
    return ("(SELECT cpn.contact_id FROM contact_phone_numbers cpn JOIN contacts pick "  # noqa: S608
            "ON pick.contact_id = cpn.contact_id "
            f"WHERE cpn.number_e164 = {number} AND cpn.workspace = {workspace} "
            "ORDER BY CASE WHEN pick.gone_at IS NULL THEN 0 ELSE 1 END, "
            "CASE WHEN pick.updated_at IS NULL THEN 1 ELSE 0 END, pick.updated_at DESC, pick.contact_id LIMIT 1)")


def _contacts_with(number: str, workspace: str) -> str:
    return ("(SELECT COUNT(DISTINCT cpn.contact_id) FROM contact_phone_numbers cpn "  # noqa: S608
            f"WHERE cpn.number_e164 = {number} AND cpn.workspace = {workspace})")


def _views_0015(dialect: str) -> list[str]:
    """Every view of this revision, in creation order.  Built from this file's and earlier revisions'
    constants only, never from input."""
    rev0002, rev0004 = _revision("0002_bi_views.py"), _revision("0004_calls.py")
    rev0007, rev0008, rev0012 = (_revision("0007_dated_api.py"), _revision("0008_transcripts.py"),
                                 _revision("0012_dimensions.py"))
    parts = rev0004._parts(dialect)
    day = parts["day"]
    lag = rev0004._seconds(dialect, "c.completed_at", "s.first_synced_at")
    completion = rev0004._seconds(dialect, "q.enqueued_at", "q.finished_at")

    name_joins = f"""\
LEFT JOIN users u ON u.user_id = COALESCE(c.user_id, c.actor_id)
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN call_participants op ON op.call_id = c.call_id
     AND op.position = (SELECT MIN(p.position) FROM call_participants p WHERE p.call_id = c.call_id AND {rev0012._OUTSIDE})
LEFT JOIN contacts ct ON ct.contact_id = {_pick_contact("op.number", "c.workspace")}"""  # noqa: S608
    select, from_ = rev0007._CALL_OVERVIEW.split("\nFROM calls c\n")
    call_overview = (f"{select},\n       {rev0012._NAME_COLUMNS},\n       c.workspace\n"
                     f"FROM calls c\n{from_}\n{name_joins}")

    contact_number_matches = f"""\
CREATE VIEW contact_number_matches AS
SELECT n.number_e164, {_pick_contact("n.number_e164", "n.workspace")} AS contact_id,
       COUNT(DISTINCT n.contact_id) AS contacts_with_number, n.workspace
FROM contact_phone_numbers n
WHERE n.number_e164 IS NOT NULL
GROUP BY n.workspace, n.number_e164"""  # noqa: S608

    call_party_overview = f"""\
CREATE VIEW call_party_overview AS
SELECT p.call_id, p.position, p.number, p.is_e164, p.actor_id, p.is_own_number,
       CASE WHEN SUBSTR(p.actor_id, 1, 3) = 'SYU' THEN 'agent'
            WHEN p.actor_id IS NOT NULL THEN 'user'
            WHEN p.is_own_number THEN 'own number'
            WHEN ct.contact_id IS NOT NULL THEN 'contact'
            ELSE 'unknown' END AS party_kind,
       u.user_id, CASE WHEN SUBSTR(p.actor_id, 1, 3) = 'SYU' THEN 'AI agent' ELSE COALESCE(u.name, u.email) END AS user_name,
       u.email AS user_email,
       ct.contact_id, ct.name AS contact_name, ct.company AS contact_company,
       CASE WHEN ct.contact_id IS NOT NULL THEN {_contacts_with("p.number", "p.workspace")} END AS contacts_with_number,
       c.created_at AS call_created_at, {day} AS call_date, c.direction, c.phone_number_id,
       pn.name AS phone_number_name, p.workspace
FROM call_participants p
JOIN calls c ON c.call_id = p.call_id
LEFT JOIN users u ON u.user_id = p.actor_id
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN contacts ct ON p.actor_id IS NULL AND ct.contact_id = {_pick_contact("p.number", "p.workspace")}"""  # noqa: S608

    # One row per day, workspace and person (line): summing over the rows still gives the total.
    daily_user_stats = f"""\
CREATE VIEW daily_user_stats AS
SELECT {day} AS call_date, COALESCE(c.user_id, c.actor_id) AS user_id,
       MAX({rev0012._USER_NAME}) AS user_name, MAX(u.email) AS user_email, MAX({rev0012._USER_KIND}) AS user_kind,
       {rev0012._DAILY_MEASURES},
       c.workspace
FROM calls c
LEFT JOIN users u ON u.user_id = COALESCE(c.user_id, c.actor_id)
LEFT JOIN call_summaries s ON s.call_id = c.call_id
GROUP BY {day}, c.workspace, COALESCE(c.user_id, c.actor_id)"""  # noqa: S608

    daily_line_stats = f"""\
CREATE VIEW daily_line_stats AS
SELECT {day} AS call_date, c.phone_number_id,
       MAX(pn.name) AS phone_number_name, MAX(pn.number) AS phone_number,
       {rev0012._DAILY_MEASURES},
       c.workspace
FROM calls c
LEFT JOIN phone_numbers pn ON pn.phone_number_id = c.phone_number_id
LEFT JOIN call_summaries s ON s.call_id = c.call_id
GROUP BY {day}, c.workspace, c.phone_number_id"""  # noqa: S608

    return [
        _append(rev0002._CALL_JOB_FIELD_VALUES, "f.workspace").format(**rev0002._VIEW_SQL[dialect]),
        _append(rev0007._CALL_SUMMARY_OVERVIEW, "s.workspace").format(completion_seconds=completion, **parts),
        _append(rev0008._LINE_OVERVIEW, "l.workspace").format(day=rev0008._day(dialect),
                                                              week=rev0008._week(dialect)),
        contact_number_matches,
        call_overview.format(lag=lag, **parts),
        call_party_overview,
        daily_user_stats,
        daily_line_stats,
    ]


def _views_0014(dialect: str) -> list[str]:
    """The views as revision 0014 left them (the downgrade puts them back)."""
    rev0002, rev0004 = _revision("0002_bi_views.py"), _revision("0004_calls.py")
    rev0007, rev0008, rev0012 = (_revision("0007_dated_api.py"), _revision("0008_transcripts.py"),
                                 _revision("0012_dimensions.py"))
    parts = rev0004._parts(dialect)
    day = parts["day"]
    return [
        rev0002._CALL_JOB_FIELD_VALUES.format(**rev0002._VIEW_SQL[dialect]),
        rev0007._CALL_SUMMARY_OVERVIEW.format(completion_seconds=rev0004._seconds(dialect, "q.enqueued_at",
                                                                                  "q.finished_at"), **parts),
        rev0008._LINE_OVERVIEW.format(day=rev0008._day(dialect), week=rev0008._week(dialect)),
        rev0012._CONTACT_NUMBER_MATCHES,
        rev0012._call_overview_0012(rev0007._CALL_OVERVIEW).format(
            lag=rev0004._seconds(dialect, "c.completed_at", "s.first_synced_at"), **parts),
        rev0012._CALL_PARTY_OVERVIEW.format(day=day),
        rev0012._DAILY_USER_STATS.format(day=day),
        rev0012._DAILY_LINE_STATS.format(day=day),
    ]


def _drop_views() -> None:
    for view in _VIEWS:
        op.execute(f"DROP VIEW {view}")


# --- keys -------------------------------------------------------------------------------

@contextmanager
def _rebuilt(table: str) -> Iterator[BatchOperations]:
    """SQLite: ``table`` rebuilt (copied to a new table) with the batch's changes.

    A new primary key is what the rebuild is for: SQLAlchemy warns that the copied columns were
    keyed otherwise before settling on the new key, which is this revision's intent, so that
    one warning is not shown (``etl db upgrade`` would print it).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Table '_alembic_tmp_\w+' specifies columns", SAWarning)
        with op.batch_alter_table(table, recreate='always') as batch:
            yield batch


def _set_key(table: str, key: Sequence[str], unique: tuple[str, Sequence[str]] | None,
             drop_unique: str | None) -> None:
    """Make ``key`` the table's primary key (and ``unique`` its unique constraint), in one statement
    on the servers (the table is never without a key), by a rebuild on SQLite."""
    dialect = _dialect()
    if dialect == 'sqlite':
        with _rebuilt(table) as batch:
            if drop_unique is not None:
                batch.drop_constraint(drop_unique, type_='unique')
            batch.create_primary_key(f'pk_{table}', list(key))
            if unique is not None:
                batch.create_unique_constraint(unique[0], list(unique[1]))
        return
    columns = ", ".join(key)
    if dialect == 'postgresql':
        changes = [f"DROP CONSTRAINT pk_{table}", f"ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"]
        if drop_unique is not None:
            changes.append(f"DROP CONSTRAINT {drop_unique}")
    else:
        changes = ["DROP PRIMARY KEY", f"ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"]
        if drop_unique is not None:
            changes.append(f"DROP INDEX {drop_unique}")
    if unique is not None:
        changes.append(f"ADD CONSTRAINT {unique[0]} UNIQUE ({', '.join(unique[1])})")
    op.execute(f"ALTER TABLE {table} " + ", ".join(changes))


def _recreate_index(name: str, table: str, columns: Sequence[str]) -> None:
    op.drop_index(name, table_name=table)
    op.create_index(name, table, list(columns), unique=False)


# --- upgrade ----------------------------------------------------------------------------

def upgrade() -> None:
    _drop_views()
    for table in _TABLES:
        # A constant default: PostgreSQL 11+ and MariaDB 10.3+ add it without rewriting the table,
        # SQLite in place; every existing row reads 'default'.
        op.add_column(table, sa.Column('workspace', _WORKSPACE, server_default=_DEFAULT, nullable=False,
                                       comment=_COMMENT))
    for table, _before, after in _KEYS:
        deliveries = table == 'webhook_deliveries'
        _set_key(table, after, _UNIQUE_AFTER if deliveries else None, _UNIQUE_BEFORE[0] if deliveries else None)
    for name, table, _before, after in _INDEXES:
        _recreate_index(name, table, after)
    for view in _views_0015(_dialect()):
        op.execute(view)


# --- downgrade --------------------------------------------------------------------------

def _allow_data_loss() -> bool:
    """What migrations/env.py reads: ``-x allow-data-loss=1`` or ``etl.db.downgrade(..., allow_data_loss=True)``."""
    given = context.get_x_argument(as_dictionary=True).get("allow-data-loss", "")
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    return bool(attributes.get("etl_allow_data_loss")) or given.lower() in ("1", "true", "yes")


def _outside_default() -> dict[str, int]:
    """Rows per table whose workspace is not ``default``: what going back would merge."""
    conn = op.get_bind()
    found = {}
    for table in _TABLES:
        rows = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE workspace <> :w"),  # noqa: S608
                            {"w": _DEFAULT}).scalar_one()
        if rows:
            found[table] = int(rows)
    return found


# Which of two rows sharing an old key stays: the 'default' one, then the first workspace by name.
_RANK = "CASE WHEN {t}.workspace = 'default' THEN '' ELSE {t}.workspace END"


def _merge_keys() -> None:
    """Delete the rows whose old key another workspace's row holds (keeping the preferred one), and give up
    an event key another workspace's delivery keeps, so the old keys are unique again."""
    for table, before, _after in _KEYS:
        same = " AND ".join(f"k.{c} = {table}.{c}" for c in before)
        op.execute(f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {table} k WHERE {same} "  # noqa: S608
                   f"AND {_RANK.format(t='k')} < {_RANK.format(t=table)})")
    op.execute("UPDATE webhook_deliveries SET event_key = NULL WHERE event_key IS NOT NULL AND EXISTS "  # noqa: S608
               "(SELECT 1 FROM webhook_deliveries k WHERE k.event_key = webhook_deliveries.event_key "
               f"AND {_RANK.format(t='k')} < {_RANK.format(t='webhook_deliveries')})")


def _drop_workspace(table: str) -> None:
    if _dialect() == 'sqlite':
        # SQLite 3.35+ drops a column in place: no rebuild of the large tables (0014 does the same).
        op.execute(f"ALTER TABLE {table} DROP COLUMN workspace")
    else:
        op.drop_column(table, 'workspace')


def downgrade() -> None:
    # Checked before any DDL: MariaDB commits each ALTER at once.
    merged = _outside_default()
    if merged and not _allow_data_loss():
        where = ", ".join(f"{table} {rows}" for table, rows in merged.items())
        raise DatabaseError(
            f"downgrade 0015 would drop data: the workspace of {sum(merged.values())} row(s) outside "
            f"'default' ({where}), merging the workspaces' rows; nothing was changed "
            "(pass -x allow-data-loss=1 to alembic to drop it)")
    if not merged:
        # Every value is the default the upgrade would give again: dropping the column loses nothing
        # (migrations/env.py's data-loss guard is told so).
        config = op.get_context().config
        if config is not None:
            config.attributes.setdefault("etl_lossless_columns", set()).update((t, 'workspace') for t in _TABLES)
    _drop_views()
    for name, table, before, _after in _INDEXES:
        _recreate_index(name, table, before)
    if merged:
        _merge_keys()
    keyed = {table for table, _before, _after in _KEYS}
    for table, before, _after in _KEYS:
        deliveries = table == 'webhook_deliveries'
        if _dialect() == 'sqlite':
            with _rebuilt(table) as batch:
                if deliveries:
                    batch.drop_constraint(_UNIQUE_AFTER[0], type_='unique')
                batch.create_primary_key(f'pk_{table}', list(before))
                batch.drop_column('workspace')
                if deliveries:
                    batch.create_unique_constraint(_UNIQUE_BEFORE[0], list(_UNIQUE_BEFORE[1]))
        else:
            _set_key(table, before, _UNIQUE_BEFORE if deliveries else None,
                     _UNIQUE_AFTER[0] if deliveries else None)
            op.drop_column(table, 'workspace')
    for table in _TABLES:
        if table not in keyed:
            _drop_workspace(table)
    for view in _views_0014(_dialect()):
        op.execute(view)
