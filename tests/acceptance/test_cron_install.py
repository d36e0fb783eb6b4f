"""cron/README.md's install steps work from a clone, copy-pasted as written.

The ```sh block under "## Install" is read from the README (not re-typed here)
and run with bash from the root of this checkout, in a temporary prefix: the
only changes are the ones a non-root test must make (the absolute install
paths mapped into tmp_path, no `useradd`, no `-o/-g` ownership, no `sudo -u`).
`$EDITOR` is a script that edits the env file as an operator would.  The
package really is installed with pip from the checkout into a new virtualenv.
Then the wrapper syncs against the simulated API over HTTP, and the health
check line of cron/crontab pages on an outage and not before.
"""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from etl import db, store
from etl.tables import queue_t, runs_t
from etl.testing import FakeOpenPhone, serve

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "cron" / "README.md"
CRONTAB = ROOT / "cron" / "crontab"
KEY = "install-test-key-0123"
PATHS = ("/opt/openphone-summary-sync", "/etc/openphone-summary-sync", "/var/log/openphone-summary-sync",
         "/var/lib/openphone-summary-sync")


def install_block() -> str:
    text = README.read_text()
    section = text[text.index("## Install"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no ```sh block under ## Install"
    return match[1]


def localise(script: str, prefix: Path) -> str:
    """What running as a non-root user in a prefix changes, and nothing else."""
    for path in PATHS:
        script = script.replace(path, str(prefix / path.strip("/").replace("/", "_")))
    lines = [line for line in script.splitlines() if not line.startswith("useradd ")]
    script = "\n".join(lines) + "\n"
    script = re.sub(r" -o \S+ -g \S+", "", script)
    return script.replace("sudo -u etl ", "")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_check_line(prefix: Path) -> str:
    [line] = [line for line in CRONTAB.read_text().splitlines()
              if line and not line.startswith("#") and "status --check" in line]
    return localise(line.split(None, 5)[5], prefix)


def test_the_documented_install_runs_from_a_clone(tmp_path):
    prefix = tmp_path / "root"
    prefix.mkdir()
    db_path = tmp_path / "openphone.db"
    db_url = f"sqlite:///{db_path}"
    fake = FakeOpenPhone(api_key=KEY)
    with serve(fake) as api:
        # The operator's edit of step 2: database URL and key (plus, in a prefix, the paths).
        editor = tmp_path / "editor.sh"
        editor.write_text(
            "#!/bin/sh\nset -e\n"
            f"sed -i -e \"s|^ETL_DATABASE_URL=.*|ETL_DATABASE_URL='{db_url}'|\" "
            f"-e \"s|^OPENPHONE_API_KEY=.*|OPENPHONE_API_KEY='{KEY}'|\" "
            + "".join(f"-e 's|{p}|{prefix / p.strip('/').replace('/', '_')}|g' " for p in PATHS)
            + "\"$1\"\n"
            f"printf \"OPENPHONE_BASE_URL='%s'\\nETL_LOG_FILE='%s'\\nETL_LOCK_FILE='%s'\\n\" "
            f"'{api}' '{prefix / 'var_log_openphone-summary-sync' / 'sync.jsonl'}' '{tmp_path / 'lock'}' >> \"$1\"\n")
        editor.chmod(0o755)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "EDITOR": str(editor),
               "ETL_ENV_FILE": str(prefix / "etc_openphone-summary-sync" / "env")}
        script = localise(install_block(), prefix)
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # Step 3 created the schema with the installed etl; step 4 ran the wrapper: exit 0, JSON lines.
        assert "exit 0" in done.stdout.splitlines()
        assert db.current_revision(db.create_engine(db_url)) == db.SCHEMA_HEAD
        env_file = Path(env["ETL_ENV_FILE"])
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        installed_etl = prefix / "opt_openphone-summary-sync" / "venv" / "bin" / "etl"
        assert f"ETL_BIN='{installed_etl}'" in env_file.read_text()

        # Work arrives; the wrapper line of step 4, as documented, syncs it.
        engine = db.create_engine(db_url)
        with engine.begin() as conn:
            store.enqueue_ids(conn, ["ACinst1", "ACinst2"])
        [wrapper_line] = [line for line in script.splitlines() if "etl-sync.sh" in line]
        rerun = subprocess.run(["bash", "-c", wrapper_line], env=env, capture_output=True, text=True, timeout=120)
        assert rerun.stdout == "exit 0\n" and rerun.stderr == ""
        with engine.connect() as conn:
            assert dict(conn.execute(sa.select(queue_t.c.call_id, queue_t.c.state)).all()) == {
                "ACinst1": "done", "ACinst2": "done"}
        log = prefix / "var_log_openphone-summary-sync" / "sync.jsonl"
        finished = [json.loads(line) for line in log.read_text().splitlines()
                    if json.loads(line)["event"] == "run finished"]
        assert [(f["completed"], f["fetched"], f["exit_code"]) for f in finished] == [(0, 0, 0), (2, 2, 0)]

        # crontab's health check: silent while healthy ...
        check = health_check_line(prefix)
        healthy = subprocess.run(["sh", "-c", check], env=env, capture_output=True, text=True, timeout=60)
        assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")

    # ... and mails once the API has been unreachable for longer than the threshold.
    env_file.write_text(re.sub(r"OPENPHONE_BASE_URL='[^']*'", f"OPENPHONE_BASE_URL='http://127.0.0.1:{closed_port()}'",
                               env_file.read_text()))
    with engine.begin() as conn:
        store.enqueue_ids(conn, ["ACinst3"])
    outage = subprocess.run(["bash", "-c", wrapper_line], env=env, capture_output=True, text=True, timeout=120)
    assert (outage.stdout, outage.stderr) == ("exit 4\n", "")  # never reached: exit 4, no mail (issue 26)
    blip = subprocess.run(["sh", "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert blip.returncode == 0, blip.stderr  # one failed run pages nobody
    with engine.begin() as conn:
        rows = conn.execute(sa.select(runs_t.c.id, runs_t.c.started_at, runs_t.c.finished_at)).all()
        for run_id, started, finished_at in rows:  # 40 minutes pass
            conn.execute(sa.update(runs_t).where(runs_t.c.id == run_id).values(
                started_at=started - timedelta(minutes=40), finished_at=finished_at - timedelta(minutes=40)))
        # The item is due again and cron runs on: a recent run, exit 4, still nothing fetched.
        conn.execute(sa.update(queue_t).values(next_attempt_at=rows[0][1] - timedelta(hours=1)))
    engine.dispose()
    again = subprocess.run(["bash", "-c", wrapper_line], env=env, capture_output=True, text=True, timeout=120)
    assert again.stdout == "exit 4\n"
    paged = subprocess.run(["sh", "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert paged.returncode == 1
    # A run that reached nothing is no successful run: both rules page.
    assert re.fullmatch(r"Error: unhealthy: last successful run finished \d+ s ago \(more than 1200 s\); "
                        r"no successful fetch since \S+Z \(\d+ s ago, more than 1800 s; "
                        r"2 runs fetched nothing\) while 1 item waits: is the API reachable\?\n",
                        paged.stderr), paged.stderr
