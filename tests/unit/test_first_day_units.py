"""The v1 signature's encoding as docs/webhooks.md states it.

A webhook sender written from the docs must produce what the receiver accepts:
the base64 of the HMAC-SHA256 digest, never its hex form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from etl.testing.webhooks import sign_v1
from etl.webhooks.signatures import SignatureError, load_secrets, verify

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = base64.b64encode(b"k" * 32).decode()
BODY = b'{"id":"EV1","type":"call.completed"}'
STAMP = 1_764_806_400_000  # 2025-12-04T00:00:00Z in milliseconds
NOW = datetime(2025, 12, 4)


def header(signature: str) -> Headers:
    return Headers({"openphone-signature": f"hmac;1;{STAMP};{signature}"})


def test_docs_say_the_v1_signature_is_base64_of_the_hmac_and_a_hex_digest_is_refused():
    text = " ".join(DOCS.read_text("utf-8").split())
    assert re.search(r"`<signature>` is the \*\*base64\*\* encoding of the 32-byte HMAC digest", text)
    assert "a hex digest of the same HMAC is refused (`401`, `bad_signature`)" in text
    digest = hmac.digest(base64.b64decode(SECRET), f"{STAMP}.".encode() + BODY, hashlib.sha256)
    secrets = load_secrets([SECRET])
    # What the docs say: base64 is accepted (and is what the simulator's signer sends) ...
    assert verify(header(base64.b64encode(digest).decode()), BODY, secrets, NOW).scheme == "openphone-v1"
    assert sign_v1(BODY, SECRET, STAMP)["openphone-signature"].endswith(base64.b64encode(digest).decode())
    # ... and the hex digest of the very same HMAC is not.
    with pytest.raises(SignatureError) as refused:
        verify(header(digest.hex()), BODY, secrets, NOW)
    assert refused.value.reason == "bad_signature"
