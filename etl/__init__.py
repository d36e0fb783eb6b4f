"""openphone-summary-sync: keep a SQL database in step with OpenPhone call summaries.

The public API (what the ``etl`` command itself uses)::

    from etl import Etl

    with Etl(database_url="sqlite:///summaries.db", api_key="...") as job:
        job.enqueue(["AC123abc"])
        stats = job.sync(max_runtime=60)      # one run, as cron's
        print(stats.completed, job.status().healthy)

Everything named in ``__all__`` is supported; other modules are the
implementation (docs/architecture.md).  The simulated API for tests is
:mod:`etl.testing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etl._version import __version__
from etl.backfill import Plan as BackfillPlan
from etl.config import API_VERSIONS, Backoff, Settings
from etl.enqueue import EnqueueCounts
from etl.errors import AuthError, DatabaseError, EtlError, SchemaAheadError, SchemaBehindError, UsageError
from etl.health import Limits as HealthLimits
from etl.job import BackfillResult, Etl, Requeued, TranscriptsQueued, Webhooks
from etl.report import Selection
from etl.status import Status
from etl.workspaces import WorkspaceConfig, load_workspaces

if TYPE_CHECKING:
    from etl.discover import DiscoveryStats
    from etl.fleet import WorkspaceResults
    from etl.prune import PruneResult
    from etl.runs import StopReason
    from etl.sync import RunStats
    from etl.webhooks.manage import Deleted, Migrated, MigrationError, Registered

__all__ = [
    "API_VERSIONS",
    "AuthError",
    "BackfillPlan",
    "BackfillResult",
    "Backoff",
    "DatabaseError",
    "Deleted",
    "DiscoveryStats",
    "EnqueueCounts",
    "Etl",
    "EtlError",
    "HealthLimits",
    "Migrated",
    "MigrationError",
    "PruneResult",
    "Registered",
    "Requeued",
    "RunStats",
    "SchemaAheadError",
    "SchemaBehindError",
    "Selection",
    "Settings",
    "Status",
    "StopReason",
    "TranscriptsQueued",
    "UsageError",
    "Webhooks",
    "WorkspaceConfig",
    "WorkspaceResults",
    "__version__",
    "load_workspaces",
]

# Imported on first use: the engine pulls in httpx and tenacity, which
# `etl status` and `etl enqueue` do not need at start-up.
_LAZY = {"RunStats": "etl.sync", "StopReason": "etl.runs", "DiscoveryStats": "etl.discover",
         "PruneResult": "etl.prune", "Migrated": "etl.webhooks.manage", "MigrationError": "etl.webhooks.manage",
         "Registered": "etl.webhooks.manage", "Deleted": "etl.webhooks.manage", "WorkspaceResults": "etl.fleet"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'etl' has no attribute {name!r}")
