"""alembic environment: the same database URL and engine settings as the `etl` CLI.

The URL comes from (first found): the URL `etl` passed in, the ``-x url=…``
option, ``ETL_DATABASE_URL``, or the SQLite default.  ``render_as_batch`` lets
SQLite alter tables; ``compare_type`` keeps ``alembic check`` strict;
``include_object`` keeps autogenerate away from the BI views (``etl.models.VIEWS``).
"""

from __future__ import annotations

from alembic import context

from etl.config import DEFAULT_DATABASE_URL
from etl.db import create_engine, env_database_url
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
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                include_object=include_object,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
