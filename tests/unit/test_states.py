"""One definition per named state (etl/states.py), and everything that must agree with it does."""

from __future__ import annotations

import typing

import sqlalchemy as sa

from etl import models, schema, states, testing
from etl.policy import QueueUpdate


def test_queue_states_and_summary_statuses_are_defined_once():
    assert states.QUEUE_STATES == ("pending", "done", "failed", "absent", "not_found", "invalid", "error")
    assert states.TERMINAL_STATES == ("done", "failed", "absent", "not_found", "invalid", "error")
    assert states.ENDED_BADLY == ("failed", "absent", "not_found", "invalid", "error")
    assert states.SUMMARY_STATUSES == ("absent", "in-progress", "completed", "failed")


def test_the_api_model_and_the_simulator_use_the_same_statuses():
    assert typing.get_args(schema.SummaryData.model_fields["status"].annotation) == states.SUMMARY_STATUSES
    assert tuple(testing.STATUSES) == states.SUMMARY_STATUSES


def test_check_constraints_list_exactly_the_states():
    def constraint(table: sa.Table, name: str) -> str:
        [ck] = [c for c in table.constraints if isinstance(c, sa.CheckConstraint) and str(c.name).endswith(name)]
        return str(ck.sqltext)

    queue_ck = constraint(models.SummaryQueue.__table__, "state")  # type: ignore[arg-type]
    status_ck = constraint(models.CallSummary.__table__, "status")  # type: ignore[arg-type]
    assert queue_ck == "state IN (" + ", ".join(f"'{s}'" for s in states.QUEUE_STATES) + ")"
    assert status_ck == "status IN (" + ", ".join(f"'{s}'" for s in states.SUMMARY_STATUSES) + ")"


def test_policy_queue_updates_are_typed_with_the_queue_states():
    hints = typing.get_type_hints(QueueUpdate)
    assert hints["state"] == states.QueueState
