"""The API's 200 responses as pydantic models: the summary (strict), calls, lines, conversations.

Two surfaces: v1 (``docs/api/call-summaries.md``, ``docs/api/more-endpoints.md``)
and the dated API 2026-03-30 (``docs/api/calls-2026-03-30.md``), whose
responses are open: fields added later are ignored, never refused, and its
summary is read from inside the call object.

The v1 summary mirrors ``docs/api/call-summaries.md`` and nothing more: required keys
are required (``summary``/``nextSteps`` may be ``null`` but not missing),
``status`` is the enum, lines are strings, a job field's value is a string, a
number or a boolean — never coerced (``"1"`` stays a string, ``true`` stays a
boolean and never becomes ``1``).  Unknown extra keys are ignored here and kept
in ``raw_json``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from etl.states import SummaryStatus, TranscriptStatus
from etl.storable import Malformed, each_item


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, frozen=True)


class JobField(_Strict):
    name: StrictStr
    # Order matters: JSON true/false must match StrictBool, never StrictInt.
    value: StrictBool | StrictInt | StrictFloat | StrictStr


class JobResult(_Strict):
    data: list[JobField]


class Job(_Strict):
    icon: StrictStr
    name: StrictStr
    result: JobResult


class SummaryData(_Strict):
    callId: StrictStr
    status: SummaryStatus
    summary: list[StrictStr] | None
    nextSteps: list[StrictStr] | None
    jobs: list[Job] | None = None


class SummaryEnvelope(_Strict):
    data: SummaryData


# --- calls, phone numbers, conversations (GET /v1/calls…, /v1/phone-numbers, /v1/conversations) ---
#
# These shapes are read more leniently than a summary: the rows they feed are
# context, so a field the API leaves out or sends as null is stored as NULL
# rather than refusing the whole call.  Types are still checked (a duration is
# a whole number, times are ISO 8601), unknown keys are ignored, and the raw
# JSON of each object is kept by the caller.


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class CallData(_Lenient):
    """A call object (``data`` of ``GET /v1/calls/{id}``, an item of ``GET /v1/calls``)."""

    id: StrictStr
    createdAt: datetime | None = None
    answeredAt: datetime | None = None
    completedAt: datetime | None = None
    updatedAt: datetime | None = None
    direction: StrictStr | None = None
    status: StrictStr | None = None
    duration: StrictInt | None = None
    phoneNumberId: StrictStr | None = None
    userId: StrictStr | None = None
    answeredBy: StrictStr | None = None
    initiatedBy: StrictStr | None = None
    forwardedFrom: StrictStr | None = None
    forwardedTo: StrictStr | None = None
    participants: list[StrictStr] | None = None


class CallEnvelope(_Lenient):
    data: CallData


class ConversationData(_Lenient):
    """An item of ``GET /v1/conversations``."""

    id: StrictStr | None = None
    phoneNumberId: StrictStr | None = None
    participants: list[StrictStr] = []
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    lastActivityAt: datetime | None = None
    deletedAt: datetime | None = None


class ConversationList(_Lenient):
    data: list[ConversationData]
    nextPageToken: StrictStr | None = None


class CallList(_Lenient):
    """``GET /v1/calls``; ``totalItems`` is documented as inaccurate and ignored: page until no token.
    A call its model refuses is a :class:`~etl.storable.Malformed` in its place (one bad call costs only itself)."""

    data: list[Annotated[CallData | Malformed, each_item(CallData)]]
    nextPageToken: StrictStr | None = None


# --- the dated API, 2026-03-30 (GET /calls, GET /calls/{id}; docs/api/calls-2026-03-30.md) ---
#
# Open: unknown keys are ignored (fields are added without a version bump), and
# values the client does not interpret (``type``, ``callRoute``, ``aiHandled``)
# are plain strings, so a new value is stored rather than refused.  The summary
# keeps the v1 summary's strict types (no coercion of job field values).


class DatedSummary(_Strict):
    """``summary`` of a dated call (``include=summary``): no ``callId`` (the call carries it)."""

    status: SummaryStatus
    type: StrictStr | None = None
    summary: list[StrictStr] | None = None
    nextSteps: list[StrictStr] | None = None
    jobs: list[Job] | None = None
    title: StrictStr | None = None


class DatedParticipant(_Lenient):
    """One party of a dated call: every party, the workspace's own number included."""

    phoneNumber: StrictStr
    actorId: StrictStr | None = None


class DatedVoicemail(_Lenient):
    """``voicemail`` of a dated call (``include=voicemail``), only when one was left."""

    id: StrictStr | None = None
    status: StrictStr | None = None
    duration: StrictInt | None = None
    recordingUrl: StrictStr | None = None
    transcript: StrictStr | None = None


class DatedCall(_Lenient):
    """A call of the dated surface (``data`` of ``GET /calls/{id}``, an item of ``GET /calls``)."""

    id: StrictStr
    phoneNumberId: StrictStr | None = None
    actorId: StrictStr | None = None
    direction: StrictStr | None = None
    status: StrictStr | None = None
    participants: list[DatedParticipant] | None = None
    answeredAt: datetime | None = None
    answeredBy: StrictStr | None = None
    initiatedBy: StrictStr | None = None
    completedAt: datetime | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    callRoute: StrictStr | None = None
    duration: StrictInt | None = None
    forwardedFrom: StrictStr | None = None
    forwardedTo: StrictStr | None = None
    aiHandled: StrictStr | None = None
    summary: DatedSummary | None = None
    voicemail: DatedVoicemail | None = None


class DatedCallEnvelope(_Lenient):
    data: DatedCall


class DatedCallList(_Lenient):
    """``GET /calls``: newest first; ``nextCursor`` is short-lived (never stored) and null on the last page."""

    data: list[Annotated[DatedCall | Malformed, each_item(DatedCall)]]  # as CallList.data
    nextCursor: StrictStr | None = None


# --- transcripts (GET /v1/call-transcripts/{id}; 2026-03-30: GET /calls/{callId}/transcripts) ---
#
# Read like the calls: unknown keys are ignored (the dated surface adds fields
# without a version bump), a line's text must be a string and its offsets
# numbers; speaker ids may be null (an external party has no user).


class DialogueData(_Lenient):
    """One line of a transcript's ``dialogue``; ``userId`` (v1) or ``actorId`` (2026-03-30) names a user."""

    content: StrictStr
    start: StrictFloat | StrictInt
    end: StrictFloat | StrictInt
    identifier: StrictStr | None = None
    userId: StrictStr | None = None
    actorId: StrictStr | None = None


class TranscriptV1Data(_Lenient):
    """``data`` of ``GET /v1/call-transcripts/{id}``: one merged transcript, offsets from the call's start."""

    callId: StrictStr
    status: TranscriptStatus
    createdAt: datetime | None = None
    duration: StrictFloat | StrictInt | None = None
    dialogue: list[DialogueData] | None = None


class TranscriptV1Envelope(_Lenient):
    data: TranscriptV1Data


class TranscriptSegmentData(_Lenient):
    """An item of ``GET /calls/{callId}/transcripts``: one recording segment, offsets from its own start."""

    recordingId: StrictStr
    status: TranscriptStatus
    startTime: datetime | None = None
    createdAt: datetime | None = None
    duration: StrictFloat | StrictInt | None = None
    dialogue: list[DialogueData] | None = None


class TranscriptPage(_Lenient):
    """A page of ``GET /calls/{callId}/transcripts`` (sorted by ``startTime``, oldest first)."""

    data: list[TranscriptSegmentData]
    nextCursor: StrictStr | None = None


# --- users, phone numbers with members, contacts (docs/api/dimensions.md) ---------------------
#
# Read leniently (context, not the summary): unknown keys ignored, a field left
# out is None.  The two surfaces name a few fields differently (v1 ``number`` /
# dated ``phoneNumber``; v1 contact ``defaultFields`` / dated top-level names):
# both spellings are optional here and the adapters pick.  An item of a list page
# its model refuses is a :class:`~etl.storable.Malformed` in its place: one bad
# user, line or contact costs only itself (issue 25).


class UserData(_Lenient):
    """A user (``GET /v1/users``, dated ``GET /users``)."""

    id: StrictStr
    email: StrictStr | None = None
    firstName: StrictStr | None = None
    lastName: StrictStr | None = None
    pictureUrl: StrictStr | None = None
    role: StrictStr | None = None
    groupId: StrictStr | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None


class UserList(_Lenient):
    data: list[Annotated[UserData | Malformed, each_item(UserData)]]  # as CallList.data
    nextPageToken: StrictStr | None = None  # v1
    nextCursor: StrictStr | None = None  # dated


class LineMemberData(_Lenient):
    """An item of a phone number's ``users[]``."""

    id: StrictStr
    email: StrictStr | None = None
    firstName: StrictStr | None = None
    lastName: StrictStr | None = None
    role: StrictStr | None = None


class LineData(_Lenient):
    """A phone number with its members (v1 ``GET /v1/phone-numbers``; dated ``GET /phone-numbers?include=users``)."""

    id: StrictStr
    name: StrictStr | None = None
    number: StrictStr | None = None  # v1
    phoneNumber: StrictStr | None = None  # dated
    formattedNumber: StrictStr | None = None
    symbol: StrictStr | None = None
    groupId: StrictStr | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    users: list[LineMemberData] | None = None


class LineList(_Lenient):
    data: list[Annotated[LineData | Malformed, each_item(LineData)]]  # as CallList.data
    nextPageToken: StrictStr | None = None  # v1
    nextCursor: StrictStr | None = None  # dated


class ContactValueData(_Lenient):
    """One of a contact's ``phoneNumbers`` or ``emails``: ``name`` is the label ("mobile")."""

    value: StrictStr
    name: StrictStr | None = None
    id: StrictStr | None = None


class ContactFieldData(_Lenient):
    """A custom field; ``value`` typed by ``type`` (a list for multi-select), kept as sent."""

    name: StrictStr | None = None
    key: StrictStr | None = None
    id: StrictStr | None = None
    type: StrictStr | None = None
    value: object = None


class ContactDefaults(_Lenient):
    """v1 ``defaultFields`` of a contact."""

    firstName: StrictStr | None = None
    lastName: StrictStr | None = None
    company: StrictStr | None = None
    role: StrictStr | None = None
    emails: list[ContactValueData] | None = None
    phoneNumbers: list[ContactValueData] | None = None


class ContactData(ContactDefaults):
    """A contact: v1 keeps names under ``defaultFields``, the dated surface at the top level."""

    id: StrictStr
    externalId: StrictStr | None = None
    source: StrictStr | None = None
    sourceUrl: StrictStr | None = None
    defaultFields: ContactDefaults | None = None
    customFields: list[ContactFieldData] | None = None
    createdByUserId: StrictStr | None = None
    actorId: StrictStr | None = None  # dated: who created it
    createdAt: datetime | None = None
    updatedAt: datetime | None = None


class ContactList(_Lenient):
    data: list[Annotated[ContactData | Malformed, each_item(ContactData)]]  # as CallList.data
    nextPageToken: StrictStr | None = None  # v1
    nextCursor: StrictStr | None = None  # dated
