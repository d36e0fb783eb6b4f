"""Benchmark: what refreshing users, lines and contacts costs through the API, per surface.  One command, one table::

    python bench/refresh_api.py                       # 50 users, 10 lines, 5,000 contacts
    python bench/refresh_api.py --contacts 20000

(The database is a fresh SQLite file per surface: storing per database is bench/dimensions.py's table.)

The simulated API (``etl.testing``) is served over real HTTP with a workspace of
``--users`` users, ``--lines`` lines and ``--contacts`` contacts
(``Workspace.generate(users=, contacts=)``); the job's own client lists them and
:func:`etl.refresh.refresh` stores them, exactly as ``etl discover`` does after
its walk.  Per surface and resource: the requests the refresh recorded, the
requests the simulator's log saw (they must agree), the rows, and the seconds
of the refresh unthrottled (``--rate 0``, the work itself) and what the
default rate (10 requests a second for the key) adds at least.  A second
refresh with contacts forced shows an unchanged refresh (only ``last_seen_at``
moves).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from etl import db  # noqa: E402
from etl.api import OpenPhoneClient  # noqa: E402
from etl.clock import SYSTEM  # noqa: E402
from etl.config import Settings  # noqa: E402
from etl.logs import configure_logging  # noqa: E402
from etl.refresh import RefreshOptions, refresh  # noqa: E402
from etl.testing import FakeOpenPhone, serve  # noqa: E402

KEY = "bench-key"
DEFAULT_RATE = Settings.rate
PATHS = {"users": ("/v1/users", "/users"), "lines": ("/v1/phone-numbers", "/phone-numbers"),
         "contacts": ("/v1/contacts", "/contacts")}


def run(api_version: str, url: str, args: argparse.Namespace) -> list[tuple[str, ...]]:
    fake = FakeOpenPhone(api_key=KEY, seed=3)
    fake.workspace.generate(phone_numbers=args.lines, conversations=1, calls=1, users=args.users,
                            contacts=args.contacts)
    db.upgrade(url)
    engine = db.create_engine(url)
    rows: list[tuple[str, ...]] = []
    try:
        with serve(fake) as base:
            settings = Settings(database_url=url, api_key=KEY, base_url=base, rate=0, api_version=api_version)
            for label in ("first", "unchanged"):
                before = len(fake.request_log)
                with OpenPhoneClient(settings, clock=SYSTEM) as client:
                    started = time.perf_counter()
                    report = refresh(engine, client, RefreshOptions(force_contacts=True), clock=SYSTEM)
                    seconds = time.perf_counter() - started
                asked = Counter(path for _m, path, _v in fake.request_log[before:])
                for done in report.done:
                    logged = sum(asked[p] for p in PATHS[done.resource])
                    seen = done.saved.seen if done.saved else 0
                    rows.append((api_version, label, done.resource, str(done.requests), str(logged), str(seen),
                                 f"{seconds:.2f}" if done.resource == "users" else "",
                                 f"{done.requests / DEFAULT_RATE:.1f}"))
    finally:
        engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--contacts", type=int, default=5000)
    args = parser.parse_args()
    configure_logging("json", "error")
    table: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, api_version in enumerate(("v1", "2026-03-30")):
            table += run(api_version, f"sqlite:///{Path(tmp) / f'refresh{n}.db'}", args)
    head = ("surface", "refresh", "resource", "requests", "simulator saw", "rows", "s (all, rate 0)",
            f"s at {DEFAULT_RATE:g}/s (min)")
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    print(f"Refresh through the API: {args.users} users, {args.lines} lines, {args.contacts:,} contacts")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
