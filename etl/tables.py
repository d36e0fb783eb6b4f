"""Typed :class:`~sqlalchemy.Table` handles of the models, for SQLAlchemy Core statements."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from etl.models import (
    CallJob,
    CallJobField,
    CallNextStep,
    CallSummary,
    CallSummaryLine,
    SummaryQueue,
    SyncRun,
    WebhookDelivery,
)

queue_t = cast(Table, SummaryQueue.__table__)
summaries_t = cast(Table, CallSummary.__table__)
lines_t = cast(Table, CallSummaryLine.__table__)
steps_t = cast(Table, CallNextStep.__table__)
jobs_t = cast(Table, CallJob.__table__)
fields_t = cast(Table, CallJobField.__table__)
runs_t = cast(Table, SyncRun.__table__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
