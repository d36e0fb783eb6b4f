"""A sync and a discovery share one run shape: the same stop reasons, exit codes and outcome fields."""

from __future__ import annotations

from etl import DiscoveryStats, RunStats, StopReason
from etl.testing.clock import FakeClock


def test_each_stop_reason_has_its_exit_code():
    codes = {reason: reason.exit_code for reason in StopReason}
    assert codes == {
        StopReason.LIMIT: 0, StopReason.MAX_RUNTIME: 0, StopReason.SIGNAL: 1, StopReason.ABORTED: 1,
        StopReason.AUTH_REFUSED: 3, StopReason.DATABASE_LOST: 1, StopReason.UNEXPECTED: 1,
        StopReason.WALK_ERRORS: 1, StopReason.REFUSED: 2, StopReason.UNREACHABLE: 4,
    }


def test_both_stats_end_their_dict_with_the_same_outcome_fields_timed_on_their_clock():
    clock = FakeClock()
    sync, found = RunStats(clock=clock, run_id=7), DiscoveryStats(clock=clock, run_id=8)
    clock.advance(2.5)
    sync.stop, sync.stop_reason, sync.exit_code = StopReason.SIGNAL, "interrupted by SIGTERM", 1
    for stats in (sync, found):
        tail = list(stats.as_dict().items())[-3:]
        expected = [("exit_code", stats.exit_code), ("stop_reason", stats.stop_reason), ("duration_s", 2.5)]
        assert tail == expected
    assert sync.as_dict()["run_id"] == 7 and found.as_dict()["run_id"] == 8


def test_the_old_import_path_of_stop_reason_is_the_same_enum():
    from etl.sync import StopReason as FromSync

    assert FromSync is StopReason


def test_the_first_stop_wins_and_a_failure_replaces_only_a_stop_that_is_not_one():
    stats = RunStats(clock=FakeClock())
    assert stats.record_stop(StopReason.SIGNAL, "interrupted by SIGTERM")
    assert not stats.record_stop(StopReason.MAX_RUNTIME, "max runtime reached")
    assert stats.record_failure(StopReason.AUTH_REFUSED, "the API refused the key")
    assert not stats.record_failure(StopReason.DATABASE_LOST, "gone")
    assert not stats.record_stop(StopReason.SIGNAL, "interrupted by SIGINT")
    assert (stats.stop, stats.stop_reason, stats.settle()) == (StopReason.AUTH_REFUSED, "the API refused the key", 3)


def test_one_exit_code_rule_for_every_run():
    cases = [(None, 0, 0), (None, 2, 1), (StopReason.LIMIT, 0, 0), (StopReason.MAX_RUNTIME, 1, 1),
             (StopReason.SIGNAL, 0, 1), (StopReason.AUTH_REFUSED, 5, 3), (StopReason.REFUSED, 0, 2)]
    for make in (RunStats, DiscoveryStats):
        for stop, errors, code in cases:
            stats = make(clock=FakeClock(), errors=errors)
            if stop is not None:
                stats.record_stop(stop, stop.value)
            assert (stop, errors, stats.settle(), stats.exit_code) == (stop, errors, code, code)
