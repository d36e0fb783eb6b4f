"""A simulated OpenPhone (Quo) API: the project's supported test double.

Use it in process through an httpx transport (no sockets, like httpx's
``MockTransport``)::

    from etl.testing import FakeOpenPhone
    fake = FakeOpenPhone(api_key="k")
    client = httpx.Client(transport=fake.transport(), base_url="https://api.openphone.com")

or over real HTTP (``with serve(fake) as url: ...``, or ``python -m etl.testing``
as its own process), where timeouts and dropped connections are real.

What it serves: call summaries (``GET /v1/call-summaries/{id}``), a seeded
workspace (``fake.workspace``: phone numbers, conversations, calls with list
paging), call transcripts on both surfaces (``GET /v1/call-transcripts/{id}``
and the dated ``GET /calls/{id}/transcripts``: segments, states through
``fake.transcript_status``, a plan without them through
``fake.transcripts_enabled = False``), webhooks CRUD (legacy ``/v1/webhooks`` and the dated version's
``/webhooks`` with signed test events), the workspace's users, named lines with members and
contacts on both surfaces (``GET /v1/users``, ``/v1/contacts``, the dated ``/users``,
``/phone-numbers?include=users``, ``/contacts/{id}``; ``fake.workspace.people`` changes and
deletes contacts; docs/api/dimensions.md), with the key check, a token-bucket rate limit,
reproducible ``Faults`` and list ``Quirks`` on every endpoint, and statistics
(``fake.stats()``, ``fake.request_times()``). The ``webhooks`` names build and
sign deliveries as OpenPhone sends them. The published shapes it follows are in
``docs/api/`` (call-summaries.md, more-endpoints.md, transcripts.md).

``FakeClock`` (:mod:`etl.testing.clock`) is the controllable :class:`etl.clock.Clock`
for the job's own code; ``ApiClock`` is the simulated API's notion of now.

Everything is reproducible: summaries derive from a hash of the call id, the
workspace from its seed and clock, and fault decisions from (fault seed,
resource, n-th request for it).
"""

from etl.testing import webhooks
from etl.testing._cli import main
from etl.testing._data import STATUSES, sample_summary
from etl.testing._fake import API_PATH_PREFIX, FakeOpenPhone
from etl.testing._faults import ENDPOINTS, Faults, Quirks
from etl.testing._people import People
from etl.testing._server import serve
from etl.testing._workspace import E164_RE, ApiClock, Call, Conversation, PhoneNumber, Workspace
from etl.testing.clock import FakeClock

__all__ = [
    "API_PATH_PREFIX",
    "E164_RE",
    "ENDPOINTS",
    "STATUSES",
    "ApiClock",
    "Call",
    "Conversation",
    "FakeClock",
    "FakeOpenPhone",
    "Faults",
    "People",
    "PhoneNumber",
    "Quirks",
    "Workspace",
    "main",
    "sample_summary",
    "serve",
    "webhooks",
]
