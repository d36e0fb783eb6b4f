"""Issue 25, findings 9-11: a database ahead of the code, echoes of the key, absurd prune ages."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner, Result

from etl import db, store
from etl.cli import cli
from etl.config import redact_url
from etl.logs import configure_logging, get_logger
from tests.support.db import API_KEY, queue_rows, run


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    structlog.reset_defaults()


def invoke(args: list[str]) -> Result:
    env = {"OPENPHONE_API_KEY": None, "ETL_DATABASE_URL": None, "OPENPHONE_BASE_URL": None}
    return CliRunner(env=env).invoke(cli, args, catch_exceptions=False, prog_name="etl")


def errors(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


@pytest.fixture
def ahead(db_url):
    """The fixture database stamped with a revision this code has never heard of; put back afterwards."""
    engine = db.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    try:
        yield db_url
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"), {"head": db.SCHEMA_HEAD})
        engine.dispose()


def test_a_database_ahead_of_the_code_is_one_error_line_on_every_command(ahead):
    url = ahead
    line = (f"Error: database {redact_url(url)} is at schema revision 0999, which this version of etl does not know "
            f"(its newest is {db.SCHEMA_HEAD}): a newer release migrated it; run that release, or downgrade the "
            "database with it")
    for args in (["sync", "--api-key", API_KEY, "--base-url", "http://127.0.0.1:9"], ["status"],
                 ["db", "upgrade"], ["enqueue", "ACahead1"],
                 ["prune", "--transcripts-older-than", "30"]):
        result = invoke([*args, "--database-url", url])
        assert (result.exit_code, errors(result)) == (2, [line]), (args, result.output)
        assert "Traceback" not in result.output
    current = invoke(["db", "current", "--database-url", url])
    assert current.exit_code == 0, current.output
    assert current.stdout == (f"database: 0999  code: {db.SCHEMA_HEAD}  "
                              "(ahead: a newer release of etl migrated this database)\n")


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "1e9", "36501"])
def test_prune_refuses_ages_that_are_no_number_of_days(db_url, days):
    result = invoke(["prune", "--transcripts-older-than", days, "--database-url", db_url])
    shown = f"{float(days):g}"
    assert result.exit_code == 2, result.output
    if days == "-inf":  # click's own range check speaks first
        return
    assert errors(result) == [f"Error: --transcripts-older-than must be a number of days from 0 to 36500 (got {shown})"]
    result = invoke(["prune", "--raw-json-older-than", days, "--database-url", db_url])
    assert errors(result) == [f"Error: --raw-json-older-than must be a number of days from 0 to 36500 (got {shown})"]


@pytest.mark.parametrize("echo", [API_KEY.upper(), API_KEY.title(),
                                  f"{API_KEY[:10]} {API_KEY[10:]}", f"{API_KEY[:9]}\n{API_KEY[9:]}"])
def test_an_echo_of_the_key_in_any_case_or_split_reaches_neither_last_error_nor_the_logs(engine, settings, fake, echo,
                                                                                         capsys):
    configure_logging("json", "debug", secrets=[API_KEY])
    fake.set_response("ACecho1", 400, {"message": f"bad request for key {echo}", "code": "400"})
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACecho1"])
    run(engine, settings, fake)
    get_logger().error("echoed", text=f"server said {echo.swapcase()}")
    last_error = queue_rows(engine)["ACecho1"]["last_error"]
    assert "bad request for key ***" in last_error
    logs = capsys.readouterr().err
    assert "server said ***" in logs
    for text in (last_error, logs):
        low = text.lower().replace("\\n", " ")
        for fragment in (API_KEY[:10].lower(), API_KEY[10:].lower(), API_KEY[:9].lower(), API_KEY[9:].lower()):
            assert fragment not in low
    assert all(json.loads(line) for line in logs.splitlines())
