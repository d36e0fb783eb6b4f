"""Logs on a real terminal (a pty) are for people.

`etl backfill` and `etl sync` run as a user runs them, stdout/stderr on a
pseudo-terminal 120 columns wide, against the simulated API over HTTP.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from etl.testing import FakeOpenPhone, serve
from tests.support.proc import read_terminal

ETL_BIN = Path(sys.executable).with_name("etl")
KEY = "terminal-key-0123"


def on_terminal(args: list[str], **env: str) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8",
                "OPENPHONE_API_KEY": KEY, **env}
    proc = subprocess.Popen([str(ETL_BIN), *args], stdin=slave, stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    out = read_terminal(master)
    os.close(master)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode()


@pytest.fixture
def api():
    fake = FakeOpenPhone(api_key=KEY)
    fake.set_response("ACgone", 404, {"message": "Call not found", "status": 404})
    with serve(fake) as url:
        yield url


@pytest.mark.parametrize("no_color", ["1", ""])
def test_a_backfill_shows_its_bar_and_only_what_needs_a_look(tmp_path, api, no_color):
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"ACbar{i}\n" for i in range(39)) + "ACgone\n")
    out = on_terminal(["backfill", "--file", str(ids), "--base-url", api, "--rate", "0", "--not-found-window", "0",
                       "--database-url", f"sqlite:///{tmp_path / 'etl.db'}"], NO_COLOR=no_color)
    lines = [part.strip() for part in re.split(r"[\r\n]+", out) if part.strip()]
    # No call line for the 39 that went well: the bar counts them.
    assert not any("ACbar" in line for line in lines), lines
    assert any(re.fullmatch(r"100%\|█+\| 40/40 .*item/s\]", line) for line in lines), lines
    error = "ERROR not_found ACgone 404 \\d+ms — HTTP 404 Not Found: Call not found"
    if no_color:
        assert "\x1b[" not in out
        assert any(re.fullmatch(error, line) for line in lines), lines
    else:
        assert any(re.fullmatch(re.escape("\x1b[31;1m") + error + re.escape("\x1b[0m"), line) for line in lines)
    assert lines[-1] == "Backfill run 1: 39 completed, 0 rescheduled, 1 not_found, 0 errors."


def test_a_sync_on_a_terminal_puts_the_outcome_first(tmp_path, api):
    db_url = f"sqlite:///{tmp_path / 'etl.db'}"
    on_terminal(["enqueue", "ACshort1", "ACgone", "--database-url", db_url])
    out = on_terminal(["sync", "--base-url", api, "--rate", "0", "--not-found-window", "0", "--database-url", db_url],
                      NO_COLOR="1")
    lines = out.splitlines()
    assert any(re.fullmatch(r"done      ACshort1 200 \d+ms", line) for line in lines), lines
    assert any(re.fullmatch(r"ERROR not_found ACgone 404 \d+ms — HTTP 404 Not Found: Call not found", line)
               for line in lines), lines
    assert max(len(line) for line in lines) <= 200
