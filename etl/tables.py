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

from etl.models import (  # noqa: E402  (the call-context tables of migration 0004)
    Call,
    CallLookup,
    CallParticipant,
    CallVoicemail,
    DiscoveryCallWatermark,
    DiscoveryConversation,
    DiscoveryRun,
    DiscoveryWatermark,
)

calls_t = cast(Table, Call.__table__)
participants_t = cast(Table, CallParticipant.__table__)
call_lookups_t = cast(Table, CallLookup.__table__)
watermarks_t = cast(Table, DiscoveryWatermark.__table__)
conversation_marks_t = cast(Table, DiscoveryConversation.__table__)
discovery_runs_t = cast(Table, DiscoveryRun.__table__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
voicemails_t = cast(Table, CallVoicemail.__table__)
call_marks_t = cast(Table, DiscoveryCallWatermark.__table__)

from etl.models import CallTranscript, CallTranscriptLine, TranscriptQueue  # noqa: E402  (migration 0008)

transcript_queue_t = cast(Table, TranscriptQueue.__table__)
transcripts_t = cast(Table, CallTranscript.__table__)
transcript_lines_t = cast(Table, CallTranscriptLine.__table__)

from etl.models import RejectedRecord  # noqa: E402  (migration 0014)

rejected_t = cast(Table, RejectedRecord.__table__)
