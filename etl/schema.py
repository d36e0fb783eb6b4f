"""The published 200 response of ``GET /v1/call-summaries/{callId}``, as strict models.

Mirrors ``docs/api/call-summaries.md`` and nothing more: required keys
are required (``summary``/``nextSteps`` may be ``null`` but not missing),
``status`` is the enum, lines are strings, a job field's value is a string, a
number or a boolean — never coerced (``"1"`` stays a string, ``true`` stays a
boolean and never becomes ``1``).  Unknown extra keys are ignored here and kept
in ``raw_json``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from etl.states import SummaryStatus


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
