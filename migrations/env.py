"""alembic environment: the same database URL and engine settings as the `etl` CLI.

The URL comes from (first found): the URL `etl` passed in, the ``-x url=…``
option, ``ETL_DATABASE_URL``, or the SQLite default.  ``render_as_batch`` lets
SQLite alter tables; ``compare_type`` keeps ``alembic check`` strict;
``include_object`` keeps autogenerate away from the BI views (``etl.models.VIEWS``).

Two guards hold for every revision, present and future (issue 25):

* SQLite rebuilds a table to alter it (batch mode): with foreign keys on,
  dropping the old parent table cascades and empties its children.  So
  migrations run with ``PRAGMA foreign_keys = OFF`` (set before the first
  transaction: SQLite ignores it inside one), and after each revision
  ``PRAGMA foreign_key_check`` must find nothing, else that revision is
  rolled back with the tables named.
* A downgrade that would drop data (a table or column that holds rows, or
  fewer rows in a table that stays) is rolled back unless told:
  ``alembic -x allow-data-loss=1 downgrade …`` (or
  ``etl.db.downgrade(url, rev, allow_data_loss=True)``).  A revision that
  has checked a column it drops holds nothing but the value its upgrade would
  give again (0015's ``workspace``, all ``'default'``), or has folded it into
  a column that stays (0013's ``transcripts_*`` counters), says so in
  ``config.attributes["etl_lossless_columns"]`` (``{(table, column)}``): that
  drop is no loss.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from etl.config import DEFAULT_DATABASE_URL
from etl.db import create_engine, env_database_url
from etl.errors import DatabaseError
from etl.models import VIEWS, Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("etl_database_url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or env_database_url()
        or DEFAULT_DATABASE_URL
    )


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # Views are created by hand-written migrations; autogenerate must not drop them.
    return not (type_ == "table" and reflected and compare_to is None and name in _views())


def _views() -> set[str]:
    # etl.models.VIEWS, plus any a caller adds (``config.attributes["etl_views"]``).
    return set(VIEWS) | set(config.attributes.get("etl_views", ()))


# What each table held before the step that runs now: {table: (rows, columns)}; None: not watched (upgrades).
Snapshot = dict[str, tuple[int, frozenset[str]]]
_before: list[Snapshot] = []


def allow_data_loss() -> bool:
    given = context.get_x_argument(as_dictionary=True).get("allow-data-loss", "")
    return bool(config.attributes.get("etl_allow_data_loss")) or given.lower() in ("1", "true", "yes")


def snapshot(connection: Connection) -> Snapshot:
    inspector = sa.inspect(connection)
    found: Snapshot = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        columns = frozenset(c["name"] for c in inspector.get_columns(table))
        rows = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
        found[table] = (int(rows), columns)
    return found


def lossless() -> set[tuple[str, str]]:
    """``(table, column)`` a revision checked: dropping them loses nothing (see the module docstring)."""
    return set(config.attributes.get("etl_lossless_columns", ()))


def data_lost(before: Snapshot, after: Snapshot) -> list[str]:
    """What a step dropped that held data, in words (empty: nothing)."""
    lost = []
    spared = lossless()
    for table, (rows, columns) in sorted(before.items()):
        if rows == 0:
            continue
        if table not in after:
            lost.append(f"table {table} ({rows} rows)")
            continue
        rows_after, columns_after = after[table]
        if gone := sorted(c for c in columns - columns_after if (table, c) not in spared):
            lost.append(f"{table}.{', '.join(gone)} ({rows} rows)")
        if rows_after < rows:
            lost.append(f"{rows - rows_after} of {rows} rows of {table}")
    return lost


def after_step(ctx: MigrationContext, step: Any, heads: Any, run_args: Any, **_kw: Any) -> None:
    """Checks after each revision, inside its transaction: a failure rolls that revision back."""
    connection = ctx.connection
    assert connection is not None
    name = f"{'upgrade' if step.is_upgrade else 'downgrade'} {step.up_revision_id}" if hasattr(
        step, "up_revision_id") else str(step)
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            tables = sorted({str(row[0]) for row in broken})
            raise DatabaseError(f"{name}: {len(broken)} row(s) break a foreign key in {', '.join(tables)}; "
                                "the revision was rolled back")
    if _before and not step.is_upgrade:
        after = snapshot(connection)
        lost = data_lost(_before[-1], after)
        if lost and not allow_data_loss():
            raise DatabaseError(f"{name} would drop data: {'; '.join(lost)}; the revision was rolled back "
                                "(pass -x allow-data-loss=1 to alembic to drop it)")
        _before.append(after)


def guard_drops(ctx: MigrationContext) -> None:
    """Check each table or column a downgrade drops for data *before* the DDL runs.

    Needed where DDL is not transactional (MariaDB commits each ALTER/DROP at
    once, so the after-step check could not roll it back); harmless elsewhere.
    """
    impl = ctx.impl
    connection = ctx.connection
    assert connection is not None
    drop_table, drop_column = impl.drop_table, impl.drop_column

    def refuse(what: str, rows: int) -> None:
        if rows and not allow_data_loss():
            raise DatabaseError(f"a downgrade would drop data: {what} ({rows} rows); nothing of that step was "
                                "dropped (pass -x allow-data-loss=1 to alembic to drop it)")

    def checked_drop_table(table: sa.Table, **kw: Any) -> None:
        rows = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table.name))).scalar_one()
        refuse(f"table {table.name}", int(rows))
        drop_table(table, **kw)

    def checked_drop_column(table_name: str, column: sa.Column[Any], *args: Any, **kw: Any) -> None:
        if (table_name, column.name) in lossless():
            drop_column(table_name, column, *args, **kw)
            return
        rows = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table_name)).where(
            sa.column(column.name).is_not(None))).scalar_one()
        refuse(f"{table_name}.{column.name}", int(rows))
        drop_column(table_name, column, *args, **kw)

    impl.drop_table = checked_drop_table  # type: ignore[method-assign]
    impl.drop_column = checked_drop_column  # type: ignore[method-assign]


def _is_downgrade(ctx: MigrationContext) -> bool:
    # alembic names the function it hands the context after the command (command.downgrade's "downgrade").
    fn = getattr(ctx, "_migrations_fn", None)
    return fn is None or getattr(fn, "__name__", "") == "downgrade"


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Before any transaction: inside one SQLite ignores the pragma.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                include_object=include_object,
                on_version_apply=after_step,
            )
            _before.clear()
            config.attributes.pop("etl_lossless_columns", None)  # per run: only what this run's revisions checked
            if _is_downgrade(context.get_context()):
                _before.append(snapshot(connection))
                if connection.dialect.name != "sqlite":  # SQLite's batch rebuilds drop tables; its DDL rolls back
                    guard_drops(context.get_context())
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
