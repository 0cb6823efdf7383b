"""Protocol 2 at the relay: a signed request authorizes one direction, one operation on one
site, once (docs/protocol.md, docs/security.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from relay.errors import BadSignature
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import Direction
from tests.support import event


def signed(key: SiteKey, document: dict[str, Any], direction: Direction = Direction.TO_RELAY
           ) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(document).encode()
    return body, signatures.headers(key, body, direction)


def test_hkdf_is_rfc_5869() -> None:
    # RFC 5869, test case 1 (SHA-256).
    okm = signatures.hkdf_sha256(bytes([0x0B] * 22), bytes(range(13)), bytes(range(0xF0, 0xFA)),
                                 42)
    assert ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
            "34007208d5b887185865") == okm.hex()


def test_each_direction_has_its_own_secret_and_neither_is_the_site_key() -> None:
    key = SiteKey.generate()
    to_relay = signatures.direction_key(key, Direction.TO_RELAY)
    to_site = signatures.direction_key(key, Direction.TO_SITE)
    assert len({to_relay, to_site, key.hmac_key}) == 3


def test_a_derived_secret_verifies_as_a_standard_webhooks_secret() -> None:
    """What any Standard Webhooks library does with ``whsec_…``: HMAC-SHA256 of id.ts.body."""
    key = SiteKey.generate()
    body = b'{"operation":"events","site":"b","events":[]}'
    h = signatures.headers(key, body, Direction.TO_SITE, "msg_1", now=1_764_250_000)
    secret = base64.b64decode(signatures.direction_secret(key, Direction.TO_SITE)[6:])
    expected = base64.b64encode(hmac.digest(secret, b"msg_1.1764250000." + body,
                                            hashlib.sha256)).decode()
    assert f"v1,{expected}" == h["webhook-signature"]


def test_what_the_relay_signs_for_a_site_does_not_verify_as_coming_from_the_site() -> None:
    key = SiteKey.generate()
    body, h = signed(key, signatures.envelope("users", "a", after=0, limit=1000),
                     Direction.TO_SITE)
    with pytest.raises(BadSignature):
        signatures.verify([key], Direction.TO_RELAY, h["webhook-id"], h["webhook-timestamp"],
                          h["webhook-signature"], body, 300)


def test_a_webhook_id_is_taken_once_within_the_window() -> None:
    guard = signatures.ReplayGuard(300)
    guard.first_use("msg_1", now=1000.0)
    with pytest.raises(BadSignature, match="already used"):
        guard.first_use("msg_1", now=1100.0)
    guard.first_use("msg_2", now=1100.0)


# --- at the relay's routes -------------------------------------------------------------------

async def test_a_signed_ping_replayed_verbatim_is_refused(two_sites: Any) -> None:
    relay, _ = await two_sites()
    body, h = signed(relay.keys["a"], signatures.envelope("ping", "a"))

    first = await relay.client.post("/v1/sites/a/ping", data=body, headers=h)
    again = await relay.client.post("/v1/sites/a/ping", data=body, headers=h)

    assert (200, 401) == (first.status, again.status)
    assert "already used" in (await again.json())["error"]


async def test_a_captured_events_request_replayed_to_the_ping_route_is_refused(
        two_sites: Any) -> None:
    relay, _ = await two_sites()
    body, h = signed(relay.keys["a"], signatures.envelope(
        "events", "a", events=[event("e1", 1, ["create"])]))
    assert 202 == (await relay.client.post("/v1/sites/a/events", data=body, headers=h)).status

    at_ping = await relay.client.post("/v1/sites/a/ping", data=body, headers=h)

    assert 400 == at_ping.status
    assert "this route takes 'ping'" in (await at_ping.json())["error"]


async def test_a_ping_body_is_not_taken_as_events(two_sites: Any) -> None:
    relay, _ = await two_sites()
    body, h = signed(relay.keys["a"], signatures.envelope("ping", "a", events=[
        event("e1", 1, ["create"])]))

    resp = await relay.client.post("/v1/sites/a/events", data=body, headers=h)

    assert 400 == resp.status
    assert "operation: got 'ping'; this route takes 'events'" in (await resp.json())["error"]
    assert [] == relay.db("SELECT * FROM deliveries")


async def test_a_body_naming_another_site_is_refused(two_sites: Any) -> None:
    relay, _ = await two_sites()
    body, h = signed(relay.keys["a"], signatures.envelope("events", "b", events=[
        event("e1", 1, ["create"])]))

    resp = await relay.client.post("/v1/sites/a/events", data=body, headers=h)

    assert 400 == resp.status
    assert "site: got 'b'; this route is site 'a'" in (await resp.json())["error"]


async def test_a_request_signed_by_the_relay_for_a_site_is_refused_at_ingest(
        two_sites: Any) -> None:
    """A request the relay sent site a (say a delivery someone captured) does not verify as a
    report from site a: the directions have different secrets."""
    relay, _ = await two_sites()
    body, h = signed(relay.keys["a"], signatures.envelope(
        "events", "a", events=[event("e1", 1, ["create"])]), Direction.TO_SITE)

    resp = await relay.client.post("/v1/sites/a/events", data=body, headers=h)

    assert 401 == resp.status
    assert [] == relay.db("SELECT * FROM deliveries")


async def test_a_protocol_1_request_gets_an_error_naming_both_versions(two_sites: Any) -> None:
    """Signed as protocol 1 did: the site key itself, no protocol header, a bare body."""
    relay, _ = await two_sites()
    key = relay.keys["a"]
    body = json.dumps({"events": [event("e1", 1, ["create"])]}).encode()
    now = int(time.time())
    digest = hmac.digest(key.hmac_key, b"msg_v1.%d." % now + body, hashlib.sha256)
    h = {"webhook-id": "msg_v1", "webhook-timestamp": str(now),
         "webhook-signature": "v1," + base64.b64encode(digest).decode()}

    events = await relay.client.post("/v1/sites/a/events", data=body, headers=h)
    ping = await relay.client.get("/v1/sites/a/ping", headers=h)

    for resp in (events, ping):
        assert 400 == resp.status
        error = (await resp.json())["error"]
        assert "speaks UserRelay protocol 2" in error and "protocol 1" in error
        assert "update the UserRelay plugin" in error
    assert [] == relay.db("SELECT * FROM deliveries")
