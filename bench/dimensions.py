"""Benchmark: storing users, lines and contacts (issue 24), per database.  One command, one printed table::

    python bench/dimensions.py                                   # SQLite, 50 users, 10 lines, 5,000 contacts
    python bench/dimensions.py --contacts 20000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/etl_bench \\
        --mysql mysql+pymysql://root@127.0.0.1:3306/etl_bench

Per database: :func:`etl.refresh.refresh` over an in-memory source of
``--users`` users, ``--lines`` lines (3 members each) and ``--contacts``
contacts (2 numbers, 1 email, 3 custom fields each, one a multi-select), three
times: the first store, an unchanged refresh (only ``last_seen_at`` moves) and
one where every 10th contact changed.  The source counts requests as the API
pages them (50 per page; v1 lists lines in one answer): what a refresh costs
against the key once the client's listings land (measure those through the
simulator then).  Times are wall-clock seconds of the whole refresh.

A second table times the analysts' views over ``--calls`` calls (one outside
party each, about half of them a contact's number) with those contacts stored:
``call_overview`` whole and for one call, ``call_party_overview`` and
``daily_user_stats``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import sqlalchemy as sa  # noqa: E402

from etl import db  # noqa: E402
from etl.dimensions import Contact, ContactField, ContactValue, Line, LineMember, Listing, User  # noqa: E402
from etl.logs import configure_logging  # noqa: E402
from etl.refresh import RefreshOptions, refresh  # noqa: E402
from etl.testing.clock import FakeClock  # noqa: E402
from tests.support.db import empty_tables  # noqa: E402

PAGE = 50


class Source:
    def __init__(self, users: int, lines: int, contacts: int) -> None:
        self.users = tuple(User(id=f"US{i:06d}", email=f"u{i}@example.com", first_name=f"User{i}", last_name="X",
                                role="member") for i in range(users))
        self.lines = tuple(Line(id=f"PN{i:04d}", name=f"Line {i}", number=f"+1555000{i:04d}",
                                members=tuple(LineMember(user_id=f"US{(i * 3 + k) % max(users, 1):06d}")
                                              for k in range(3))) for i in range(lines))
        self.version = 0
        self.n_contacts = contacts

    def contacts(self) -> tuple[Contact, ...]:
        return tuple(Contact(
            id=f"CT{i:07d}", first_name=f"Contact{i}", last_name="Y",
            company=f"Company {i % 97}{' v' + str(self.version) if i % 10 == 0 and self.version else ''}",
            phone_numbers=(ContactValue(value=f"+1666{i:07d}", label="mobile"),
                           ContactValue(value=f"(777) {i % 1000:03d}-{i % 10000:04d}", label="work")),
            emails=(ContactValue(value=f"c{i}@example.org", label="work"),),
            custom_fields=(ContactField(key="plan", name="Plan", type="string", value="Pro"),
                           ContactField(key="seats", name="Seats", type="number", value=i % 50),
                           ContactField(key="tags", name="Interests", type="multi-select", value=["a", "b"])),
        ) for i in range(self.n_contacts))

    def list_users(self) -> Listing[User]:
        return Listing(items=self.users, complete=True, requests=max(1, math.ceil(len(self.users) / PAGE)))

    def list_lines(self) -> Listing[Line]:
        return Listing(items=self.lines, complete=True, requests=1)

    def list_contacts(self, *, updated_since: datetime | None = None) -> Listing[Contact]:
        items = self.contacts()
        return Listing(items=items, complete=True, requests=max(1, math.ceil(len(items) / PAGE)))


def measure(name: str, url: str, args: argparse.Namespace) -> list[str]:
    db.upgrade(url)
    empty_tables(url)  # a throwaway database: every table emptied, as before each test
    engine = db.create_engine(url)
    source, clock = Source(args.users, args.lines, args.contacts), FakeClock(datetime(2026, 12, 1, 9))
    rows = []
    try:
        for label in ("first store", "unchanged", "10 % changed"):
            if label == "10 % changed":
                source.version = 1
            started = time.perf_counter()
            done = refresh(engine, source, RefreshOptions(force_contacts=True), clock=clock)
            seconds = time.perf_counter() - started
            contacts = next(r for r in done.done if r.resource == "contacts")
            saved = contacts.saved
            assert saved is not None
            rows.append(f"| {name} | {label} | {done.requests} | {contacts.requests} | {saved.seen} | {saved.new} "
                        f"| {saved.changed} | {seconds:.2f} |")
            clock.advance(timedelta(hours=25).total_seconds())
    finally:
        engine.dispose()
    return rows


VIEW_QUERIES = (
    ("call_overview, all calls", "SELECT COUNT(*), COUNT(contact_name), COUNT(user_name) FROM call_overview"),
    ("call_overview, one call", "SELECT contact_name, user_name FROM call_overview WHERE call_id = 'ACb777'"),
    ("call_party_overview, matched parties", "SELECT COUNT(*) FROM call_party_overview WHERE contact_id IS NOT NULL"),
    ("daily_user_stats, all days", "SELECT SUM(calls), SUM(talk_seconds) FROM daily_user_stats"),
)


def measure_views(name: str, url: str, args: argparse.Namespace) -> list[str]:
    engine = db.create_engine(url)
    n, users, contacts = args.calls, max(args.users, 1), max(args.contacts, 1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO calls (call_id, created_at, answered_at, direction, user_id, phone_number_id, "
                "duration_seconds, participant_count, content_hash, raw_json, first_synced_at, last_synced_at) "
                "VALUES (:c, :t, :t, 'incoming', :u, :p, 60, 1, 'h', '{}', :t, :t)"),
                [{"c": f"ACb{i}", "t": datetime(2026, 11, 1 + i % 28, 10), "u": f"US{i % users:06d}",
                  "p": f"PN{i % max(args.lines, 1):04d}"} for i in range(n)])
            conn.execute(sa.text("INSERT INTO call_participants (call_id, position, number, is_e164) "
                                 "VALUES (:c, 0, :n, :e)"),
                         [{"c": f"ACb{i}", "n": f"+1666{(i * 7) % (2 * contacts):07d}", "e": True} for i in range(n)])
        rows = []
        for label, sql in VIEW_QUERIES:
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(sa.text(sql)).all()
            rows.append(f"| {name} | {label} | {time.perf_counter() - started:.2f} |")
        return rows
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=20000, help="calls for the views' timings")
    parser.add_argument("--postgres", help="a throwaway PostgreSQL database URL")
    parser.add_argument("--mysql", help="a throwaway MariaDB/MySQL database URL")
    args = parser.parse_args()
    configure_logging("json", "warning")
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite:///{tmp}/bench.db")]
        targets += [(n, u) for n, u in (("postgresql", args.postgres), ("mariadb", args.mysql)) if u]
        print(f"{args.users} users, {args.lines} lines, {args.contacts} contacts (requests at {PAGE} per page)")
        print("| database | refresh | requests (all) | requests (contacts) | contacts seen | new | changed | seconds |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, url in targets:
            for row in measure(name, url, args):
                print(row, flush=True)
        print(f"\nViews over {args.calls} calls and {args.contacts} contacts")
        print("| database | query | seconds |")
        print("| --- | --- | --- |")
        for name, url in targets:
            for row in measure_views(name, url, args):
                print(row, flush=True)


if __name__ == "__main__":
    main()
