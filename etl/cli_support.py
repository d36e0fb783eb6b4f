"""What ``etl/cli.py`` needs beyond the public API (``etl.__all__``): the setting declarations it
builds its options from, and the helpers it prints with.

The CLI is a client of :mod:`etl` like any other; these are not API (they may change with the
CLI), so they live here rather than in ``etl.__all__`` (``tests/unit/test_layers.py`` lets
``etl/cli.py`` import this module, :mod:`etl.logs` and ``etl.__all__``, nothing else).
"""

from __future__ import annotations

from etl.backfill import requeue_selection
from etl.config import (
    API_KEY,
    API_VERSION,
    BASE_URL,
    BATCH_SIZE,
    CONCURRENCY,
    CONTACTS_REFRESH_HOURS,
    DATABASE_URL,
    DBT_ERROR_AFTER,
    DBT_SOURCE_NAME,
    DBT_WARN_AFTER,
    DELIVERY_RETENTION,
    FETCH_CALLS,
    HOST,
    MAX_AGE,
    MAX_CONNECTIONS,
    MAX_ERRORS,
    MAX_FETCH_GAP,
    MIGRATE_WAIT,
    NOT_FOUND_WINDOW,
    POLL_INTERVAL,
    PORT,
    RATE,
    REVISION,
    SERVE_READ_TIMEOUT,
    TOLERANCE,
    TRANSCRIPTS,
    WEBHOOK_LABEL,
    WEBHOOK_MAX_BODY_BYTES,
    WEBHOOK_SECRETS,
    WORKSPACE,
    WORKSPACES_FILE,
    Setting,
    flag_of,
)
from etl.enqueue import invalid_printer, invalid_rest_message, no_valid_ids_message, source_name
from etl.ratelimit import rate_problem
from etl.states import plural
from etl.status import workspaces_document, workspaces_text

__all__ = [
    "API_KEY", "API_VERSION", "BASE_URL", "BATCH_SIZE", "CONCURRENCY", "CONTACTS_REFRESH_HOURS", "DATABASE_URL",
    "DBT_ERROR_AFTER",
    "DBT_SOURCE_NAME", "DBT_WARN_AFTER", "DELIVERY_RETENTION",
    "FETCH_CALLS", "HOST", "MAX_AGE", "MAX_CONNECTIONS", "MAX_ERRORS", "MAX_FETCH_GAP", "MIGRATE_WAIT",
    "NOT_FOUND_WINDOW", "POLL_INTERVAL", "PORT", "RATE", "REVISION",
    "SERVE_READ_TIMEOUT", "TOLERANCE", "TRANSCRIPTS", "WEBHOOK_LABEL", "WEBHOOK_MAX_BODY_BYTES", "WEBHOOK_SECRETS",
    "WORKSPACE",
    "WORKSPACES_FILE", "Setting",
    "flag_of", "invalid_printer", "invalid_rest_message", "no_valid_ids_message", "plural", "rate_problem",
    "requeue_selection", "source_name", "workspaces_document", "workspaces_text",
]
