"""Benchmark: requests per call with transcripts on (issue 19), on both API surfaces.

One command, one printed table::

    python bench/transcripts.py                      # SQLite, 400 calls, unthrottled
    python bench/transcripts.py --rate 10 --calls 200 --postgres postgresql+psycopg://… --mysql mysql+pymysql://…

Per database and surface: a seeded simulated workspace (``etl.testing``, over
real HTTP on 127.0.0.1) with ``--calls`` calls (about 5 in 6 completed, each
with 1-3 recording segments), every call id enqueued by hand (no call row), then
``Etl.sync`` with ``transcripts=True`` to the end at ``--rate`` (0 = unthrottled;
the simulator enforces the same rate with a burst of 10).  Requests are counted
at the simulator per endpoint; "per call" divides by the calls enqueued.  On
this branch the summary path is v1 on both surfaces (the dated summary path is
issue 17's); the transcript requests are v1 ``GET /v1/call-transcripts/{id}``
or dated ``GET /calls/{id}/transcripts`` (``limit=50``: one page per call).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import sqlalchemy as sa  # noqa: E402

from etl import Etl, db, store  # noqa: E402
from etl.config import Backoff, Settings  # noqa: E402
from etl.logs import configure_logging  # noqa: E402
from etl.testing import FakeOpenPhone, serve  # noqa: E402
from tests.support.db import empty_tables  # noqa: E402

KEY = "bench-key-0123456789"
SURFACES = ("v1", "2026-03-30")


def one(url: str, surface: str, calls: int, rate: float) -> dict[str, Any]:
    db.upgrade(url)
    empty_tables(url)  # a throwaway database: every table emptied, as before each test
    fake = FakeOpenPhone(api_key=KEY, rate=rate, burst=10, seed=19)
    per_conversation = 10
    fake.workspace.generate(phone_numbers=2, conversations=max(1, calls // (2 * per_conversation)),
                            calls=per_conversation, days=7)
    ids = sorted(fake.workspace.calls)
    settings = Settings(database_url=url, api_key=KEY, rate=rate, concurrency=8, transcripts=True,
                        api_version=surface, backoff=Backoff(not_found_window=0))
    with serve(fake) as base_url, Etl(settings.replace(base_url=base_url)) as job:
        engine = job.engine
        with engine.begin() as conn:
            store.enqueue_ids(conn, ids)
        started = time.monotonic()
        stats = job.sync()
        seconds = time.monotonic() - started
        with engine.connect() as conn:
            done = conn.execute(sa.text("SELECT COUNT(*) FROM transcript_queue WHERE state = 'done'")).scalar_one()
            lines = conn.execute(sa.text("SELECT COUNT(*) FROM call_transcript_lines")).scalar_one()
    per = fake.stats()["endpoints"]
    assert isinstance(per, dict)

    def requests(*names: str) -> int:
        return sum(int(per.get(n, {}).get("requests", 0)) for n in names)

    transcript = requests("call-transcripts", "transcripts")
    total = requests(*per)
    return {
        "calls": len(ids), "exit": stats.exit_code, "transcripts": int(done), "lines": int(lines),
        # The dated surface answers the call and its summary in one request (GET /calls/{id}).
        "call req": requests("call"), "summary req": requests("call-summaries"),
        "call+summary req": requests("dated-call"), "transcript req": transcript,
        "req/call": round(total / len(ids), 2), "transcript req/call": round(transcript / len(ids), 2),
        "seconds": round(seconds, 1), "transcripts/s": round(int(done) / seconds, 1) if seconds else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls in the workspace (about)")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s for the key and the simulator; 0 = none")
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database (emptied)")
    parser.add_argument("--mysql", metavar="URL", help="also on this MariaDB/MySQL database (emptied)")
    args = parser.parse_args()
    configure_logging("json", "critical")  # the table is the output
    with tempfile.TemporaryDirectory() as tmp:
        databases = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        databases += [(name, url) for name, url in (("postgresql", args.postgres), ("mariadb", args.mysql)) if url]
        rows = [{"database": name, "surface": surface, **one(url, surface, args.calls, args.rate)}
                for name, url in databases for surface in SURFACES]
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print(f"Transcripts on, every call enqueued by hand, --rate {args.rate:g}:")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    main()
