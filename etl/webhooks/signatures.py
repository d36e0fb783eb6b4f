"""Webhook signature verification: OpenPhone's legacy header and Standard Webhooks.

Pure functions of (headers, raw body, secrets, now): no I/O, so every refusal
is unit-testable.  Two schemes, told apart by their headers:

* **openphone-v1** (webhooks created with ``/v1/webhooks``; quo.com/docs/webhooks/legacy-signature-validation):
  ``openphone-signature: hmac;1;<timestamp>;<base64 signature>``, the signature
  being HMAC-SHA256 over ``<timestamp>.<raw body>`` keyed with the
  base64-decoded signing secret.  The documented example timestamp has 13
  digits (milliseconds); 10-digit values are read as seconds so that a change
  of unit on the sender's side cannot lock every delivery out.
* **standard** (webhooks of the dated API version): ``webhook-id``,
  ``webhook-timestamp`` (seconds), ``webhook-signature``; the expected
  signature is computed by the ``standardwebhooks`` library (``Webhook.sign``)
  and compared here in constant time, so the age check is this module's, on
  the caller's ``now`` (the library's own ``verify`` reads the system clock
  and has a fixed 5-minute window).

The age of a timestamp is checked on numbers before anything else, so a
timestamp no calendar can hold (``9999999999999999``) is ``stale_timestamp``
like any other, never an overflow.

Several secrets are tried in turn (one per registered webhook, and old plus
new during a rotation).  A verified message gets a *message key*, the same for
the same signed message however its headers are spelled, so storing it
detects a replay: for openphone-v1 a hash of the timestamp and the canonical
signature; for Standard Webhooks a hash of ``webhook-id``, the message's
idempotency key (the same id re-signed with a fresh timestamp is the sender's
retry, not a new message).  Secrets never leave this module in any message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from standardwebhooks import Webhook

Scheme = Literal["openphone-v1", "standard"]
Reason = Literal["missing_header", "malformed_header", "stale_timestamp", "bad_signature"]

LEGACY_HEADER = "openphone-signature"
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
DEFAULT_TOLERANCE_S = 300.0

_LEGACY_RE = re.compile(r"hmac;1;(\d{1,16});([A-Za-z0-9+/=]{1,200})")
_STANDARD_TS_RE = re.compile(r"\d{1,12}")


class SignatureError(Exception):
    """The delivery is refused (401); ``reason`` is a metric label, the message is safe to log."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class SecretError(ValueError):
    """A configured secret is unusable (the message never contains the secret)."""


@dataclass(frozen=True, slots=True)
class Verified:
    scheme: Scheme
    message_key: str  # sha256 hex of the signed message's identity
    message_id: str | None  # webhook-id (standard); None for openphone-v1
    signed_at: datetime  # naive UTC, from the signature header


@dataclass(frozen=True, slots=True)
class _Secret:
    raw: bytes  # the HMAC key
    standard: Webhook


def load_secrets(values: Sequence[str]) -> list[_Secret]:
    """Decode configured secrets (``whsec_<base64>`` or plain base64); refuse unusable ones."""
    secrets = []
    for n, value in enumerate(values, 1):
        text = value.strip()
        body = text.removeprefix("whsec_")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f"webhook secret #{n} is not base64 (expected the signing key as shown "
                              "by OpenPhone, optionally prefixed whsec_)") from None
        if len(raw) < 16:
            raise SecretError(f"webhook secret #{n} is too short ({len(raw)} bytes decoded; at least 16 expected)")
        secrets.append(_Secret(raw, Webhook(raw)))
    return secrets


def same_secret(one: Sequence[str], other: Sequence[str]) -> bool:
    """Whether two lists of configured secrets share a signing key (however each is spelled: ``whsec_``
    or not, padding or not).  Both lists must load (:func:`load_secrets`)."""
    keys = {secret.raw for secret in load_secrets(one)}
    return any(secret.raw in keys for secret in load_secrets(other))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _check_age(signed: float, now: datetime, tolerance: float) -> datetime:
    # Compare numbers first: a far-off timestamp has no datetime (year > 9999).
    skew = abs(now.replace(tzinfo=UTC).timestamp() - signed)
    if skew > tolerance:
        shown = f"{skew:.0f} s" if skew < 10**9 else "more than 30 years"
        raise SignatureError("stale_timestamp", f"signature timestamp is {shown} away from now "
                                                f"(tolerance {tolerance:.0f} s)")
    return datetime.fromtimestamp(signed, UTC).replace(tzinfo=None)


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[_Secret], now: datetime,
           tolerance: float = DEFAULT_TOLERANCE_S) -> Verified:
    """Verify a delivery; raise :class:`SignatureError` with the refusal reason.

    ``headers`` must be case-insensitive (Starlette's and httpx's are);
    ``now`` is naive UTC.
    """
    if all(headers.get(h) for h in STANDARD_HEADERS):
        return _verify_standard(headers, body, secrets, now, tolerance)
    if headers.get(LEGACY_HEADER) is not None:
        return _verify_legacy(headers[LEGACY_HEADER], body, secrets, now, tolerance)
    if any(headers.get(h) for h in STANDARD_HEADERS):
        raise SignatureError("missing_header", "incomplete Standard Webhooks headers "
                                               "(webhook-id, webhook-timestamp and webhook-signature are all needed)")
    raise SignatureError("missing_header", "no signature header (openphone-signature or webhook-signature)")


def _verify_legacy(header: str, body: bytes, secrets: Sequence[_Secret], now: datetime,
                   tolerance: float) -> Verified:
    match = _LEGACY_RE.fullmatch(header.strip())
    if match is None:
        raise SignatureError("malformed_header", "openphone-signature is not hmac;1;<timestamp>;<signature>")
    stamp, given = match.groups()
    value = int(stamp)
    # 13 digits in the documented example (ms); a 10-digit value is seconds.
    signed_at = _check_age(value / 1000 if value >= 10**11 else float(value), now, tolerance)
    message = stamp.encode() + b"." + body
    for secret in secrets:
        expected = base64.b64encode(hmac.digest(secret.raw, message, "sha256")).decode()
        if hmac.compare_digest(expected, given):
            return Verified("openphone-v1", _digest("openphone-v1", stamp, expected), None, signed_at)
    raise SignatureError("bad_signature", "openphone-signature does not match the body with any configured secret")


def _verify_standard(headers: Mapping[str, str], body: bytes, secrets: Sequence[_Secret], now: datetime,
                     tolerance: float) -> Verified:
    msg_id, stamp, signature = (headers[h].strip() for h in STANDARD_HEADERS)
    given = signature.split()
    if not _STANDARD_TS_RE.fullmatch(stamp) or not given or not all(part.count(",") == 1 for part in given):
        raise SignatureError("malformed_header", "webhook-timestamp or webhook-signature is malformed")
    signed_at = _check_age(float(stamp), now, tolerance)
    for secret in secrets:
        # The library signs the canonical timestamp (an integer), so "0<ts>" verifies like "<ts>".
        expected = secret.standard.sign(msg_id, signed_at.replace(tzinfo=UTC), body).encode()
        if any(hmac.compare_digest(expected, part.encode()) for part in given):
            # The key names the exact message (id and canonical timestamp): its replay is refused whatever
            # arrived before it; a re-signed copy (same id, another timestamp) is a new message whose
            # event was seen, a duplicate (issue 25, finding 8).
            return Verified("standard", _digest("standard", msg_id, str(int(float(stamp)))), msg_id, signed_at)
    raise SignatureError("bad_signature", "webhook-signature does not match the body with any configured secret")
