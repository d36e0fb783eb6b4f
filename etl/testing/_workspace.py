"""The simulated workspace: phone numbers, conversations and calls on a controllable clock.

``Workspace.generate`` builds a workspace deterministically from a seed and a
start time: N phone numbers, conversations with E.164 participants, and calls
with created/answered/completed/updated times, direction, status, duration and
user. Tests add calls at a given time (``add_call``) and move the fake's clock
(``ApiClock.advance``) to exercise discovery windows and watermarks. Shapes
follow the v1 API (``docs``: calls/get-a-call-by-id, conversations/list-conversations,
phone-numbers/list-phone-numbers); unknown extra fields such as ``contactIds``
are included on purpose, as the real API adds fields over time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
from dataclasses import dataclass, field

from etl.clock import SYSTEM, Clock
from etl.testing._data import iso, rng_for
from etl.testing._data import make_id as _id
from etl.testing._people import LINE_NAMES, People

UTC = dt.UTC
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
CALL_STATUSES = (
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed",
    "no-answer", "canceled", "missed", "answered", "forwarded", "abandoned",
)  # fmt: skip


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 query parameter; naive times are taken as UTC. ValueError if malformed."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class ApiClock:
    """The fake's notion of now.

    Without ``start`` it follows ``clock`` (so summaries that are "not
    generated yet" become ready as time passes: the real clock in subprocess
    tests, the job's ``FakeClock`` when the test shares one); with ``start`` it
    is frozen there. ``advance`` moves it either way.  ``clock`` also times the
    simulator's own waits, rate limit and cursors: the simulator runs on the
    same :class:`etl.clock.Clock` as the job when it is given that clock.
    """

    def __init__(self, start: dt.datetime | None = None, *, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._start = start.astimezone(UTC) if start is not None else None
        self._offset = dt.timedelta()
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            base = self._start if self._start is not None else self.clock.utcnow().replace(tzinfo=UTC)
            return base + self._offset

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock forward (or back, with a negative value); the new now."""
        with self._lock:
            self._offset += dt.timedelta(seconds=seconds)
        return self.now()


@dataclass
class PhoneNumber:
    id: str
    number: str
    name: str
    users: list[str]
    created_at: dt.datetime
    group_id: str

    def to_json(self) -> dict[str, object]:
        formatted = self.number
        if self.number.startswith("+1") and len(self.number) == 12:
            n = self.number[2:]
            formatted = f"({n[:3]}) {n[3:6]}-{n[6:]}"
        return {
            "id": self.id,
            "object": "phoneNumber",
            "number": self.number,
            "formattedNumber": formatted,
            "name": self.name,
            "groupId": self.group_id,
            "portRequestId": None,
            "restrictions": None,
            "users": [{"id": u, "email": f"{u.lower()}@example.com", "role": "member"} for u in self.users],
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.created_at),
        }


@dataclass
class Conversation:
    id: str
    phone_number_id: str
    participants: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    last_activity_at: dt.datetime
    name: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "conversation",
            "phoneNumberId": self.phone_number_id,
            "participants": list(self.participants),
            "name": self.name,
            "assignedTo": None,
            "lastActivityAt": iso(self.last_activity_at),
            "lastActivityId": None,
            "mutedUntil": None,
            "snoozedUntil": None,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "deletedAt": None,
        }


@dataclass
class Call:
    id: str
    phone_number_id: str
    participants: list[str]
    direction: str
    status: str
    created_at: dt.datetime
    answered_at: dt.datetime | None
    completed_at: dt.datetime | None
    updated_at: dt.datetime
    duration: int
    user_id: str | None
    answered_by: str | None = None
    initiated_by: str | None = None
    forwarded_from: str | None = None
    forwarded_to: str | None = None
    conversation_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    # Handled by the AI agent (the dated API shows aiHandled, a system actor and an agent summary).
    ai_handled: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "call",
            "answeredAt": iso(self.answered_at),
            "answeredBy": self.answered_by,
            "initiatedBy": self.initiated_by,
            "direction": self.direction,
            "status": self.status,
            "completedAt": iso(self.completed_at),
            "createdAt": iso(self.created_at),
            "duration": self.duration,
            "forwardedFrom": self.forwarded_from,
            "forwardedTo": self.forwarded_to,
            "phoneNumberId": self.phone_number_id,
            "participants": list(self.participants),
            "updatedAt": iso(self.updated_at),
            "userId": self.user_id,
            # Not in the v1 schema's call: clients must ignore unknown fields.
            "contactIds": [],
            **self.extra,
        }


def _line_name(index: int) -> str:
    return LINE_NAMES[index] if index < len(LINE_NAMES) else f"Line {index + 1}"


class Workspace:
    """Phone numbers, conversations and calls, all addressable by id; thread-safe to add to."""

    def __init__(self, clock: ApiClock, seed: int = 0) -> None:
        self.clock = clock
        self.seed = seed
        self.phone_numbers: dict[str, PhoneNumber] = {}
        self.conversations: dict[str, Conversation] = {}
        self.calls: dict[str, Call] = {}
        # Completed calls whose summary answers 404 for good.
        self.summary_missing: set[str] = set()
        self._n = itertools.count()
        self.lock = threading.RLock()
        # Users and contacts (etl.testing._people): who the lines and calls name, and who they talk to.
        self.people = People(seed, self.lock)
        # When synthesised calls are dated from: fixed at the first one, so that the same id is
        # the same call on every request (two reads must not straddle a second and disagree).
        self._synth_epoch: dt.datetime | None = None

    # -- building ---------------------------------------------------------

    def add_phone_number(
        self, number: str | None = None, *, name: str | None = None, users: list[str] | None = None
    ) -> PhoneNumber:
        with self.lock:
            n = next(self._n)
            rng = rng_for("pn", self.seed, n)
            pn = PhoneNumber(
                id=_id("PN", self.seed, "pn", n),
                number=number or f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}",
                name=name or _line_name(len(self.phone_numbers)),
                users=users if users is not None else [_id("US", self.seed, "user", n % 3)[:12]],
                created_at=self.clock.now() - dt.timedelta(days=365),
                group_id=_id("GR", self.seed, "group")[:12],
            )
            self.phone_numbers[pn.id] = pn
            return pn

    def add_conversation(
        self, phone_number_id: str, participants: list[str], *, at: dt.datetime | None = None
    ) -> Conversation:
        """A conversation of ``phone_number_id`` with ``participants`` (stored as given, E.164 or not)."""
        with self.lock:
            if phone_number_id not in self.phone_numbers:
                raise KeyError(f"no phone number {phone_number_id}")
            when = at or self.clock.now()
            conv = Conversation(
                id=_id("CN", self.seed, "cn", next(self._n)),
                phone_number_id=phone_number_id,
                participants=list(participants),
                created_at=when,
                updated_at=when,
                last_activity_at=when,
            )
            self.conversations[conv.id] = conv
            return conv

    def add_call(
        self,
        conversation_id: str,
        *,
        at: dt.datetime | None = None,
        status: str = "completed",
        direction: str | None = None,
        duration: int | None = None,
        user_id: str | None = None,
        call_id: str | None = None,
        ai_handled: bool = False,
    ) -> Call:
        """A call in a conversation, created at ``at`` (default: the clock's now).

        A completed call is answered 5-20 s after it was created and ends
        ``duration`` seconds later; other statuses have no answer time and end
        when they are created. The conversation's ``updatedAt`` and
        ``lastActivityAt`` move to the call's last update.
        """
        if status not in CALL_STATUSES:
            raise ValueError(f"status must be one of {CALL_STATUSES}")
        with self.lock:
            conv = self.conversations[conversation_id]
            pn = self.phone_numbers[conv.phone_number_id]
            n = next(self._n)
            rng = rng_for("call", self.seed, n)
            created = (at or self.clock.now()).astimezone(UTC).replace(microsecond=0)
            direction = direction or rng.choice(("incoming", "outgoing"))
            user = user_id or (pn.users[0] if pn.users else None)
            answered = completed = None
            if status == "completed":
                duration = duration if duration is not None else rng.randint(15, 1800)
                answered = created + dt.timedelta(seconds=rng.randint(5, 20))
                completed = answered + dt.timedelta(seconds=duration)
            else:
                duration = duration or 0
                if status in ("missed", "no-answer", "busy", "failed", "canceled", "abandoned"):
                    completed = created + dt.timedelta(seconds=rng.randint(10, 40))
            updated = completed or created
            call = Call(
                id=call_id or _id("AC", self.seed, "call", n),
                phone_number_id=pn.id,
                participants=list(conv.participants),
                direction=direction,
                status=status,
                created_at=created,
                answered_at=answered,
                completed_at=completed,
                updated_at=updated,
                duration=duration,
                user_id=user,
                answered_by=user if answered and direction == "incoming" else None,
                initiated_by=user if direction == "outgoing" else None,
                conversation_id=conv.id,
                ai_handled=ai_handled,
            )
            self.calls[call.id] = call
            conv.updated_at = max(conv.updated_at, updated)
            conv.last_activity_at = max(conv.last_activity_at, updated)
            return call

    def add_calls(
        self, conversation_id: str, count: int, *, start: dt.datetime, spacing_seconds: float = 600
    ) -> list[Call]:
        """``count`` completed calls, one every ``spacing_seconds`` from ``start`` (a busy conversation)."""
        step = dt.timedelta(seconds=spacing_seconds)
        return [self.add_call(conversation_id, at=start + i * step) for i in range(count)]

    def generate(
        self,
        *,
        phone_numbers: int = 2,
        conversations: int = 3,
        calls: int = 4,
        days: float = 7,
        busy_calls: int = 0,
        non_e164: bool = False,
        missing_summaries: int = 0,
        group_calls: int = 0,
        agent_calls: int = 0,
        users: int = 0,
        contacts: int = 0,
    ) -> None:
        """Fill the workspace deterministically from the seed and the clock's now.

        ``conversations`` per phone number and ``calls`` per conversation,
        spread over the last ``days``; about one call in six is not completed
        (missed, no-answer...). Options add the oddities of issue 10 part 7:
        one conversation with ``busy_calls`` calls, one whose participants are
        not E.164 (with one call), and ``missing_summaries`` completed calls
        whose summary answers 404 for good; ``group_calls`` calls in one group
        conversation (three other parties: v1 cannot list them, the dated API
        does) and ``agent_calls`` incoming calls the AI agent answered.  Then the people
        (``People.generate``): a user for everyone the calls name, one on a line without calls,
        contacts for most other parties; ``users``/``contacts`` pad them to these totals.
        """
        now = self.clock.now().replace(microsecond=0)
        rng = rng_for("workspace", self.seed)
        span = int(days * 86400)
        for _ in range(phone_numbers):
            pn = self.add_phone_number()
            for _ in range(conversations):
                other = f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
                conv = self.add_conversation(pn.id, [other], at=now - dt.timedelta(seconds=span))
                for _ in range(calls):
                    status = "completed" if rng.random() < 5 / 6 else rng.choice(("missed", "no-answer"))
                    # Calls end before now: a completed call's summary is ready.
                    at = now - dt.timedelta(seconds=rng.randint(3600, max(3601, span)))
                    self.add_call(conv.id, at=at, status=status)
        first = next(iter(self.phone_numbers.values()), None) or self.add_phone_number()
        if busy_calls:
            conv = self.add_conversation(first.id, ["+15550001000"], at=now - dt.timedelta(seconds=span))
            self.add_calls(conv.id, busy_calls, start=now - dt.timedelta(seconds=span),
                           spacing_seconds=max(1.0, (span - 7200) / busy_calls))  # fmt: skip
        if non_e164:
            conv = self.add_conversation(first.id, ["5550001", "anonymous"], at=now - dt.timedelta(days=1))
            self.add_call(conv.id, at=now - dt.timedelta(hours=5))
        if group_calls:
            parties = ["+15550002001", "+15550002002", "+15550002003"]
            conv = self.add_conversation(first.id, parties, at=now - dt.timedelta(seconds=span))
            for i in range(group_calls):
                self.add_call(conv.id, at=now - dt.timedelta(seconds=3600 + i * 977))
        if agent_calls:
            conv = self.add_conversation(first.id, ["+15550003000"], at=now - dt.timedelta(seconds=span))
            for i in range(agent_calls):
                self.add_call(conv.id, at=now - dt.timedelta(seconds=5400 + i * 1301), direction="incoming",
                              ai_handled=True)
        if missing_summaries:
            completed = [c.id for c in self.calls.values() if c.status == "completed"]
            self.summary_missing.update(completed[:missing_summaries])
        lines = list(self.phone_numbers.values())
        own = {pn.number for pn in lines}
        parties = [p for conv in self.conversations.values() for p in conv.participants if p not in own]
        self.people.generate(named=self.named_users(), first_line=lines[0].users if lines else None,
                             parties=parties, users=users, contacts=contacts)

    # -- reading ------------------------------------------------------------

    def named_users(self) -> list[str]:
        """The user ids the lines and calls name (members, then each call's user, answerer, initiator)."""
        with self.lock:
            named = [u for pn in self.phone_numbers.values() for u in pn.users]
            for call in self.calls.values():
                named += [u for u in (call.user_id, call.answered_by, call.initiated_by) if u]
            return named

    def line_json(self, pn: PhoneNumber) -> dict[str, object]:
        """A line as ``GET /v1/phone-numbers`` shows it, its ``users[]`` named from the user records."""
        with self.lock:
            body = pn.to_json()
            body["users"] = [self.people.add_user(uid).member_json() for uid in pn.users]
            return body

    def synth_call(self, call_id: str) -> Call:
        """A completed call for an id the workspace does not hold, deterministic from the id.

        It lets a fake that answers summaries for any id (``default_status``)
        answer ``GET /v1/calls/{id}`` consistently too, as the benchmark needs.
        """
        rng = rng_for("synth-call", call_id)
        with self.lock:
            if self._synth_epoch is None:
                self._synth_epoch = self.clock.now().replace(microsecond=0)
            epoch = self._synth_epoch
        created = epoch - dt.timedelta(seconds=rng.randint(7200, 86400))
        duration = rng.randint(15, 1800)
        answered = created + dt.timedelta(seconds=rng.randint(5, 20))
        completed = answered + dt.timedelta(seconds=duration)
        direction = rng.choice(("incoming", "outgoing"))
        user = _id("US", "synth", rng.randint(0, 4))[:12]
        return Call(
            id=call_id,
            phone_number_id=_id("PN", "synth", rng.randint(0, 2)),
            participants=[f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"],
            direction=direction,
            status="completed",
            created_at=created,
            answered_at=answered,
            completed_at=completed,
            updated_at=completed,
            duration=duration,
            user_id=user,
            answered_by=user if direction == "incoming" else None,
            initiated_by=user if direction == "outgoing" else None,
        )
