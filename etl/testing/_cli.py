"""``python -m etl.testing``: serve the simulated API over HTTP until SIGTERM/SIGINT.

Prints ``listening on http://127.0.0.1:PORT`` first on stdout (what scripts
read), then, unless ``--quiet``, what a person needs to point ``etl`` at it: the
API key and an ``export`` line to paste (stdout too, so ``> sim.log`` keeps them).  Then it serves; on
the signal it stops and (``--stats-file``) writes the statistics as JSON.  By
default the workspace holds 2 phone numbers with 3 conversations of 4 calls
each, so ``etl discover`` finds calls (README, "Try the commands on the
simulator").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from etl.clock import SYSTEM
from etl.testing._data import STATUSES
from etl.testing._fake import FakeOpenPhone
from etl.testing._faults import ENDPOINTS, Faults, Quirks
from etl.testing._server import Running
from etl.testing._workspace import ApiClock, parse_time


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _optional_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _endpoints(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(ENDPOINTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown endpoints {sorted(unknown)}; known: {', '.join(ENDPOINTS)}")
    return names


def _when(text: str) -> dt.datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text} is not an ISO 8601 date-time") from exc


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: not again after a help that names its own, and ``none``, not ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text:
            return text
        if action.default is None and action.option_strings:
            return text + " (default: none)"
        return super()._get_help_string(action)


def _parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a simulated OpenPhone API over HTTP/1.1; it prints the base URL and the API key to use.",
        formatter_class=_Help,
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free port")
    p.add_argument("--api-key", default="test-key", help="the key the API accepts (OPENPHONE_API_KEY)")
    p.add_argument("--forbidden-key", action="append", default=[], help="key answered with 403 (repeatable)")
    p.add_argument("--no-transcripts", action="store_true",
                   help="a plan without transcripts: both transcript routes answer 403")
    p.add_argument(
        "--default-status",
        type=_optional_str,
        default="completed",
        choices=[*STATUSES, None],
        metavar="{" + ",".join([*STATUSES, "none"]) + "}",
        help="status of generated summaries for unknown ids; 'none' answers 404",
    )
    p.add_argument("--rate", type=float, default=0.0, help="requests/s allowed; 0 = unlimited")
    p.add_argument("--burst", type=int, default=10, help="requests allowed at once above --rate")
    p.add_argument("--latency-ms", type=float, default=0.0, help="mean simulated latency per request")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated latency and the workspace")
    w = p.add_argument_group("workspace (phone numbers, conversations, calls)")
    w.add_argument("--phone-numbers", type=int, default=2, help="generate this many phone numbers (0: none)")
    w.add_argument("--conversations", type=int, default=3, help="conversations per phone number")
    w.add_argument("--calls", type=int, default=4, help="calls per conversation")
    w.add_argument("--days", type=float, default=7, help="spread the calls over this many days before now")
    w.add_argument("--busy-calls", type=int, default=0, help="add one conversation with this many calls")
    w.add_argument("--non-e164", action="store_true", help="add a conversation whose participants are not E.164")
    w.add_argument("--missing-summaries", type=int, default=0, help="completed calls whose summary 404s")
    w.add_argument("--users", type=int, default=0,
                   help="pad the workspace's users to this many (0: those the calls name and one without calls)")
    w.add_argument("--contacts", type=int, default=0,
                   help="pad the contacts to this many (0: contacts for most of the calls' other parties)")
    w.add_argument("--clock-start", type=_when, help="freeze the fake's clock here (default: wall clock)")
    q = p.add_argument_group("list and timing quirks")
    q.add_argument("--quirk-repeat-item", action="store_true", help="pages repeat the previous page's last item")
    q.add_argument("--quirk-empty-page", action="store_true", help="an empty page with a next token after page 1")
    q.add_argument("--quirk-listed-twice", action="append", default=[], help="call id listed twice (repeatable)")
    q.add_argument("--quirk-contacts-need-external-ids", action="store_true",
                   help="GET /v1/contacts without externalIds answers 400 (contacts cannot be listed)")
    q.add_argument("--summary-pending-seconds", type=float, default=0.0,
                   help="workspace summaries answer 404 until this long after the call completed")  # fmt: skip
    d = Faults()
    f = p.add_argument_group("faults")
    f.add_argument("--fault-seed", type=int, default=d.seed, help="seed of the fault decisions")
    f.add_argument("--fault-500", type=_probability, default=d.error_500, help="probability of a 500")
    f.add_argument("--fault-429", type=_probability, default=d.rate_429, help="probability of a 429")
    f.add_argument("--fault-retry-after", type=_optional_str, default=d.retry_after,
                   help="Retry-After of injected 429s: seconds, an HTTP date, or 'none'")  # fmt: skip
    f.add_argument("--fault-drop", type=_probability, default=d.drop, help="probability of a dropped connection")
    f.add_argument("--fault-hang", type=_probability, default=d.hang, help="probability of a hang")
    f.add_argument("--fault-hang-seconds", type=float, default=d.hang_seconds, help="how long a hang lasts")
    f.add_argument("--fault-truncated", type=_probability, default=d.truncated, help="probability of a cut body")
    f.add_argument("--fault-garbage", type=_probability, default=d.garbage, help="probability of a non-JSON body")
    f.add_argument("--fault-schema-violation", type=_probability, default=d.schema_violation,
                   help="probability of a body that violates the schema")
    f.add_argument("--fault-max-per-id", type=_optional_int, default=d.max_per_id, help="int or 'none'")
    f.add_argument("--fault-endpoints", type=_endpoints, default=None,
                   help=f"endpoints that get faults, comma-separated (default: all of {', '.join(ENDPOINTS)})")
    p.add_argument("--stats-file", type=Path, help="write stats JSON here on shutdown")
    p.add_argument("--stats-times", action="store_true", help="include each request's time in the stats file")
    p.add_argument("--stats-ids", action="store_true",
                   help="include the summary fetches of every call id in the stats file")
    p.add_argument("--quiet", action="store_true", help="print only the 'listening on' line (no hints on stderr)")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> FakeOpenPhone:
    """The fake the command line describes."""
    faults = Faults(
        seed=args.fault_seed,
        error_500=args.fault_500,
        rate_429=args.fault_429,
        retry_after=args.fault_retry_after,
        drop=args.fault_drop,
        hang=args.fault_hang,
        hang_seconds=args.fault_hang_seconds,
        truncated=args.fault_truncated,
        garbage=args.fault_garbage,
        schema_violation=args.fault_schema_violation,
        max_per_id=args.fault_max_per_id,
        endpoints=args.fault_endpoints,
    )
    quirks = Quirks(
        repeat_item=args.quirk_repeat_item,
        empty_page=args.quirk_empty_page,
        listed_twice=frozenset(args.quirk_listed_twice),
        summary_pending_seconds=args.summary_pending_seconds,
        contacts_need_external_ids=args.quirk_contacts_need_external_ids,
    )
    fake = FakeOpenPhone(
        api_key=args.api_key,
        default_status=args.default_status,
        faults=faults,
        quirks=quirks,
        rate=args.rate,
        burst=args.burst,
        latency_ms=args.latency_ms,
        seed=args.seed,
        forbidden_keys=frozenset(args.forbidden_key),
        clock=ApiClock(args.clock_start),
    )
    fake.transcripts_enabled = not args.no_transcripts
    if args.phone_numbers:
        fake.workspace.generate(
            phone_numbers=args.phone_numbers,
            conversations=args.conversations,
            calls=args.calls,
            days=args.days,
            busy_calls=args.busy_calls,
            non_e164=args.non_e164,
            missing_summaries=args.missing_summaries,
            users=args.users,
            contacts=args.contacts,
        )
    return fake


def main(argv: Sequence[str] | None = None, prog: str = "python -m etl.testing") -> int:
    """Entry point of ``python -m etl.testing``."""
    args = _parse_args(argv, prog)
    fake = build(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    running = Running(fake, args.host, args.port)
    print(f"listening on {running.url}", flush=True)
    if not args.quiet:
        lines = len(fake.workspace.phone_numbers)
        calls = len(fake.workspace.calls)
        people = fake.workspace.people
        print(f"API key: {args.api_key}   workspace: {lines} phone numbers, {calls} calls, "
              f"{len(people.users)} users, {len(people.contacts)} contacts\n"
              f"Point etl at it (paste in another terminal):\n"
              f"export OPENPHONE_BASE_URL={running.url} OPENPHONE_API_KEY={args.api_key}",
              flush=True)
    while not SYSTEM.idle(0.5, stop):
        pass
    running.stop()
    if args.stats_file is not None:
        # Write then rename, so a reader never sees half a file.
        tmp = args.stats_file.with_name(args.stats_file.name + ".tmp")
        stats = fake.stats(times=args.stats_times, ids=args.stats_ids)
        tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.stats_file)
    return 0
