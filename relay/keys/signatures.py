"""Signatures of protocol 2: Standard Webhooks ``v1`` (HMAC-SHA256 over ``id.timestamp.body``)
with one secret per direction, over a body that names its operation.

A signed request authorizes one thing (docs/protocol.md, docs/security.md):
- **one direction**: the site's key is never used as is. HKDF-SHA256 derives one secret for what
  a site sends the relay and another for what the relay sends a site, so a request captured on
  one side never verifies on the other;
- **one operation on one site**: every signed body is a JSON object naming ``operation`` and
  ``site``, and each route accepts only its own (``check_envelope`` in relay/model/events.py);
- **once, and only recently**: the timestamp must be within the window, and receivers remember
  the ``webhook-id`` of what they accepted (``ReplayGuard`` here; ingest's receipts do it for
  events).

Each derived secret is an ordinary Standard Webhooks secret (``whsec_`` + its base64, see
``direction_secret``), so any Standard Webhooks library can verify a delivery body.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import time
from typing import Any

from relay.constants import PROTOCOL
from relay.errors import BadSignature, ProtocolMismatch
from relay.keys.crypto import SiteKey

PROTOCOL_HEADER = "userrelay-protocol"
HKDF_SALT = b"userrelay"


class Direction(enum.Enum):
    """Who signs: a site reporting to the relay, or the relay calling a site's plugin."""

    TO_RELAY = "site-to-relay"
    TO_SITE = "relay-to-site"

    @property
    def info(self) -> bytes:
        return f"userrelay/{PROTOCOL} {self.value}".encode()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 (PHP: ``hash_hkdf('sha256', $ikm, $length, $info, $salt)``)."""
    prk = hmac.digest(salt, ikm, hashlib.sha256)
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), hashlib.sha256)
        out += block
    return out[:length]


def direction_key(key: SiteKey, direction: Direction) -> bytes:
    """The HMAC key of one direction, derived from the site's key (cached on the key)."""
    cached = key.derived.get(direction.value)
    if cached is None:
        cached = hkdf_sha256(key.hmac_key, HKDF_SALT, direction.info)
        key.derived[direction.value] = cached
    return cached


def direction_secret(key: SiteKey, direction: Direction) -> str:
    """The same key as a Standard Webhooks secret (``whsec_…``), for a third-party verifier."""
    return "whsec_" + base64.b64encode(direction_key(key, direction)).decode("ascii")


def sign(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message under one derived secret."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.digest(secret, signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode("ascii")


def envelope(operation: str, site: str, **params: Any) -> dict[str, Any]:
    """The body of a signed request: its operation, the site it concerns, its parameters."""
    return {"operation": operation, "site": site, **params}


def headers(key: SiteKey, body: bytes, direction: Direction, webhook_id: str | None = None,
            now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` sent in ``direction``, with our protocol."""
    webhook_id = webhook_id or "msg_" + secrets.token_urlsafe(18)
    timestamp = int(now if now is not None else time.time())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(direction_key(key, direction), webhook_id, timestamp, body),
        "content-type": "application/json",
        PROTOCOL_HEADER: str(PROTOCOL),
    }


def check_protocol(offered: str | None, peer: str) -> None:
    """Refuse a request of another protocol version, naming both (``ProtocolMismatch``, 400)."""
    if offered == str(PROTOCOL):
        return
    spoken = f"protocol {offered}" if offered else "protocol 1 (no userrelay-protocol header)"
    raise ProtocolMismatch(f"this relay speaks UserRelay protocol {PROTOCOL}; {peer} sent "
                           f"{spoken}: update the UserRelay plugin there to a version that "
                           f"speaks protocol {PROTOCOL}")


def check_header_shape(webhook_id: str | None, timestamp: str | None, signature: str | None,
                       tolerance: float, now: float | None = None) -> int:
    """What can be refused before the body is read: missing headers, a timestamp that is not
    whole seconds or is outside the window. Returns the timestamp."""
    if not webhook_id or not timestamp or not signature:
        missing = [name for name, value in (("webhook-id", webhook_id),
                   ("webhook-timestamp", timestamp), ("webhook-signature", signature))
                   if not value]
        raise BadSignature(f"missing header(s): {', '.join(missing)}")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise BadSignature("webhook-timestamp must be whole unix seconds")
    sent_at = int(timestamp)
    skew = (now if now is not None else time.time()) - sent_at
    if abs(skew) > tolerance:
        raise BadSignature(f"webhook-timestamp is {abs(skew):.0f}s "
                           f"{'old' if skew > 0 else 'in the future'}; at most "
                           f"{tolerance:.0f}s is accepted (check the site's clock)")
    return sent_at


def verify(keys: list[SiteKey], direction: Direction, webhook_id: str | None,
           timestamp: str | None, signature: str | None, body: bytes, tolerance: float,
           now: float | None = None) -> None:
    """Raise ``BadSignature`` unless one of ``keys`` signed this message for ``direction``
    recently enough."""
    sent_at = check_header_shape(webhook_id, timestamp, signature, tolerance, now)
    assert webhook_id is not None and signature is not None
    offered = [part.partition(",")[2] for part in signature.split() if part.startswith("v1,")]
    for key in keys:
        expected = sign(direction_key(key, direction), webhook_id, sent_at,
                        body).partition(",")[2]
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise BadSignature("the signature does not match this site's current key")


class ReplayGuard:
    """The ``webhook-id``s accepted within the window: a second use is refused.

    In memory: the relay is one process, and a restart takes longer than nothing; an id older
    than the window is refused by its timestamp anyway.
    """

    def __init__(self, window: float) -> None:
        self._window = window
        self._seen: dict[str, float] = {}
        self._next_sweep = 0.0

    def first_use(self, webhook_id: str, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        if now >= self._next_sweep:
            horizon = now - 2 * self._window  # timestamps may be up to one window ahead
            self._seen = {k: t for k, t in self._seen.items() if t > horizon}
            self._next_sweep = now + self._window / 10
        if webhook_id in self._seen:
            raise BadSignature(f"webhook-id {webhook_id[:80]!r} was already used; a signed "
                               "request is accepted once")
        self._seen[webhook_id] = now
