"""`--rate` refuses values the limiter cannot pace, with an exact message (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from etl.cli import cli


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got -1"),
    ("0.01", "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got 0.01"),
    ("1e9", "must be 0 (unthrottled) or between 0.1 and 1000 requests per second, got 1e+09"),
    ("nan", "must be a number, got nan"),
    ("fast", "'fast' is not a number of requests per second"),
])
@pytest.mark.parametrize("command", ["sync", "backfill"])
def test_bad_rate_is_refused(tmp_path, command, value, message):
    result = CliRunner().invoke(cli, [command, "--rate", value, "--api-key", "k", "--log-format", "json",
                                      "--database-url", f"sqlite:///{tmp_path / 'x.db'}"], prog_name="etl")
    assert result.exit_code == 2
    # One line (issue 26), with where to look.
    assert result.output.splitlines() == [f"Error: Invalid value for '--rate': {message}. Try 'etl {command} --help'."]
    assert not (tmp_path / "x.db").exists()
