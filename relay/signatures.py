"""Standard Webhooks signatures (``v1``: HMAC-SHA256 over ``id.timestamp.body``), both ways.

Sites sign what they send us with their key; we sign what we deliver to them with theirs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from relay.crypto import SiteKey
from relay.errors import BadSignature


def sign(key: SiteKey, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.digest(key.hmac_key, signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(key: SiteKey, body: bytes, webhook_id: str | None = None,
            now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, plus its content type."""
    webhook_id = webhook_id or "msg_" + secrets.token_urlsafe(18)
    timestamp = int(now if now is not None else time.time())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(keys: list[SiteKey], webhook_id: str | None, timestamp: str | None,
           signature: str | None, body: bytes, tolerance: float,
           now: float | None = None) -> None:
    """Raise ``BadSignature`` unless one of ``keys`` signed this message recently enough."""
    if not webhook_id or not timestamp or not signature:
        missing = [name for name, value in (("webhook-id", webhook_id),
                   ("webhook-timestamp", timestamp), ("webhook-signature", signature))
                   if not value]
        raise BadSignature(f"missing header(s): {', '.join(missing)}")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise BadSignature("webhook-timestamp must be whole unix seconds") from None
    skew = (now if now is not None else time.time()) - sent_at
    if abs(skew) > tolerance:
        raise BadSignature(f"webhook-timestamp is {abs(skew):.0f}s "
                           f"{'old' if skew > 0 else 'in the future'}; at most "
                           f"{tolerance:.0f}s is accepted (check the site's clock)")
    offered = [part.partition(",")[2] for part in signature.split() if part.startswith("v1,")]
    for key in keys:
        expected = sign(key, webhook_id, sent_at, body).partition(",")[2]
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise BadSignature("the signature does not match this site's current key")
