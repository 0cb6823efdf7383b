"""Ingest: who may send events, what is refused, and that a repeat changes nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.keys.signatures import Direction
from tests.support import event


async def test_an_unknown_site_gets_404(two_sites: Any) -> None:
    relay, _ = await two_sites()

    resp = await relay.client.post("/v1/sites/nowhere/events", data=b"{}")

    assert 404 == resp.status
    assert "no site 'nowhere'" in (await resp.json())["error"]


async def test_a_request_without_signature_headers_gets_401_naming_them(two_sites: Any) -> None:
    relay, _ = await two_sites()

    resp = await relay.client.post("/v1/sites/a/events", data=b'{"events": []}')

    assert 401 == resp.status
    assert (await resp.json())["error"] == (
        "missing header(s): webhook-id, webhook-timestamp, webhook-signature")


async def test_a_request_signed_with_another_key_gets_401(two_sites: Any) -> None:
    relay, _ = await two_sites()

    status, answer = await relay.post("a", [event("e1", 1, ["create"])], key=SiteKey.generate())

    assert (401, "the signature does not match this site's current key") == (
        status, answer["error"])


async def test_a_request_signed_with_the_partners_key_gets_401(two_sites: Any) -> None:
    relay, _ = await two_sites()

    status, _ = await relay.post("a", [event("e1", 1, ["create"])], key=relay.keys["b"])

    assert 401 == status


@pytest.mark.parametrize("offset", [-301, 301])
async def test_a_timestamp_more_than_five_minutes_off_gets_401(two_sites: Any,
                                                               offset: int) -> None:
    relay, _ = await two_sites()

    status, answer = await relay.post("a", [event("e1", 1, ["create"])],
                                      timestamp=time.time() + offset)

    assert 401 == status
    assert "at most 300s is accepted" in answer["error"]


async def test_a_body_over_the_limit_gets_413(two_sites: Any, tmp_path: Any) -> None:
    relay, _ = await two_sites(ingest={"max_body_bytes": 4096})
    limit = relay.config.ingest.max_body_bytes
    big = event("e1", 1, ["create", "metadata"], meta={"blob": "x" * limit})

    status, answer = await relay.post("a", [big])

    assert 413 == status
    assert f"larger than {limit} bytes" in answer["error"]


async def test_a_body_that_is_not_json_gets_400(two_sites: Any) -> None:
    relay, _ = await two_sites()
    body = b"events=1"

    resp = await relay.client.post("/v1/sites/a/events", data=body,
                                   headers=signatures.headers(relay.keys["a"], body,
                                                              Direction.TO_RELAY))

    assert 400 == resp.status
    assert (await resp.json())["error"].startswith("the body is not JSON")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda e: e["user"].pop("email"), "events[1].user.email: got null; expected a string"),
    (lambda e: e.update(actions=["create", "fly"]), "events[1].actions: got [\"create\", \"fly\"]"),
    (lambda e: e.update(actions=["delete", "edit"]), "events[1].actions: got [\"delete\", \"edit\"]"
                                                     "; expected delete alone"),
    (lambda e: e["user"].update(id="x"), "events[1].user.id: got \"x\"; expected the site's user"),
    (lambda e: e.pop("occurred_at"), "events[1].occurred_at: got null; expected unix seconds"),
    (lambda e: e["user"].update(roles="admin"), "events[1].user.roles: got \"admin\"; expected a "
                                                "list of role names"),
])
async def test_an_event_off_the_schema_gets_400_naming_the_field(
        two_sites: Any, mutate: Any, message: str) -> None:
    relay, b = await two_sites()
    bad = event("e2", 2, ["create", "roles"])
    mutate(bad)

    status, answer = await relay.post("a", [event("e1", 1, ["create"]), bad])

    assert 400 == status
    assert answer["error"].startswith(message), answer["error"]
    assert [] == relay.db("SELECT * FROM deliveries")  # the good one was not taken either


async def test_a_repeated_webhook_id_gets_the_first_answer_and_changes_nothing(
        two_sites: Any) -> None:
    relay, b = await two_sites()
    first = await relay.post("a", [event("e1", 1, ["create"])], webhook_id="msg_1")

    again = await relay.post("a", [event("e9", 9, ["create"])], webhook_id="msg_1")

    assert first == again
    assert [(1,)] == relay.db("SELECT count(*) FROM deliveries")


async def test_an_event_sent_again_in_another_request_counts_once(two_sites: Any) -> None:
    relay, b = await two_sites()
    await relay.post("a", [event("e1", 1, ["create"])])

    status, answer = await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])

    assert (202, 1, 1) == (status, answer["accepted"], answer["duplicates"])
    assert [(2,)] == relay.db("SELECT count(*) FROM deliveries")


async def test_a_regenerated_key_makes_the_old_one_invalid_at_once(two_sites: Any) -> None:
    relay, _ = await two_sites()
    old = relay.keys["a"]
    store = KeyStore(relay.config.database_path, relay.config.master_key_path)
    new = store.generate("a")
    store.close()

    refused = await relay.post("a", [event("e1", 1, ["create"])], key=old)
    taken = await relay.post("a", [event("e2", 2, ["create"])], key=new)

    assert (401, 202) == (refused[0], taken[0])


async def test_keys_are_stored_sealed_not_in_clear(two_sites: Any) -> None:
    relay, _ = await two_sites()

    (sealed,) = relay.db("SELECT sealed FROM site_keys WHERE site = 'a'")[0]

    assert relay.keys["a"].secret.encode() not in sealed
    assert relay.keys["a"].hmac_key not in sealed
    assert 0o600 == relay.config.master_key_path.stat().st_mode & 0o777


async def test_a_site_without_a_key_is_refused_with_a_hint(two_sites: Any) -> None:
    relay, _ = await two_sites()
    store = KeyStore(relay.config.database_path, relay.config.master_key_path)
    store.revoke("a")
    store.close()

    status, answer = await relay.post("a", [event("e1", 1, ["create"])])

    assert (401, "site 'a' has no key at the relay yet") == (status, answer["error"])


async def test_an_answer_says_what_was_done_with_each_event(two_sites: Any) -> None:
    relay, _ = await two_sites()
    echo = event("e2", 2, ["edit"])
    echo["origin"] = {"site": "b", "event_id": "b-7"}

    status, answer = await relay.post("a", [event("e1", 1, ["create"]), echo])

    assert 202 == status
    assert {"status": "accepted", "accepted": 1, "duplicates": 0, "echoes": 1,
            "deliveries": 1, "unjudged": 0, "filtered": []} == answer
    assert json.dumps(answer)  # plain JSON, no secrets


async def test_a_signed_ping_says_the_relay_knows_the_site_and_its_key(two_sites: Any) -> None:
    relay, _ = await two_sites()

    def ping(site: str, key: str) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(signatures.envelope("ping", site)).encode()
        return body, signatures.headers(relay.keys[key], body, Direction.TO_RELAY)

    ok = await relay.client.post("/v1/sites/a/ping", data=ping("a", "a")[0],
                                 headers=ping("a", "a")[1])
    refused = await relay.client.post("/v1/sites/a/ping", data=ping("a", "b")[0],
                                      headers=ping("a", "b")[1])
    unknown = await relay.client.post("/v1/sites/zz/ping", data=ping("zz", "a")[0],
                                      headers=ping("zz", "a")[1])

    assert (200, 401, 404) == (ok.status, refused.status, unknown.status)
    assert "a" == (await ok.json())["site"]
    assert "2" == ok.headers["userrelay-protocol"]
    assert [] == relay.db("SELECT * FROM receipts")
