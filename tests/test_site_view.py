"""A site's own view of the relay (``POST /v1/sites/{site}/overview``): signed by that site,
taken once, read-only, and only about that site."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from relay.keys import signatures
from relay.keys.signatures import Direction
from tests.support import event, until


def refusing_everything(document: dict[str, Any]) -> web.Response:
    return web.json_response({"results": [{"id": e["id"], "status": 422,
                                           "error": "no such role here"}
                                          for e in document["events"]]})


async def overview(relay: Any, site: str, signer: str | None = None, operation: str = "overview",
                   webhook_id: str | None = None) -> tuple[int, Any]:
    body = json.dumps(signatures.envelope(operation, site)).encode()
    headers = signatures.headers(relay.keys[signer or site], body, Direction.TO_RELAY,
                                 webhook_id)
    resp = await relay.client.post(f"/v1/sites/{site}/overview", data=body, headers=headers)
    return resp.status, await resp.json()


async def test_each_site_sees_its_links_as_seen_from_it_and_only_its_own_changes(
        two_sites: Any) -> None:
    relay, b = await two_sites(refusing_everything, max_attempts=1)
    await relay.post("a", [event("e1", 1, ["create"], email="ann@example.test")])
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state = 'dead'")
                == [(1,)])

    status_a, seen_a = await overview(relay, "a")
    status_b, seen_b = await overview(relay, "b")

    assert (200, 200) == (status_a, status_b)
    [link_a], [link_b] = seen_a["links"], seen_b["links"]
    assert ("a-b", "b", "push", "active") == (link_a["link"], link_a["remote"],
                                             link_a["direction"], link_a["state"])
    assert [] == link_a["takes"] and "create" in link_a["sends"]
    assert ("a", "pull", []) == (link_b["remote"], link_b["direction"], link_b["sends"])
    assert "create" in link_b["takes"]
    assert 1 == seen_a["dead_letters"]["count"]
    [dead] = seen_a["dead_letters"]["latest"]
    assert ("b", 422, "no such role here") == (dead["to"], dead["status"], dead["reason"])
    assert {"count": 0, "latest": []} == seen_b["dead_letters"]
    for answer in (seen_a, seen_b):
        text = json.dumps(answer)
        assert "whsec_" not in text and str(relay.config.database_path) not in text
        assert all(k.secret not in text for k in relay.keys.values())


async def test_another_sites_key_another_operation_or_a_second_use_is_refused(
        two_sites: Any) -> None:
    relay, _ = await two_sites()

    forged, _ = await overview(relay, "a", signer="b")
    wrong_operation, said = await overview(relay, "a", operation="ping")
    first, _ = await overview(relay, "a", webhook_id="msg_overview_once")
    again, _ = await overview(relay, "a", webhook_id="msg_overview_once")

    assert 401 == forged
    assert 400 == wrong_operation and "overview" in said["error"]
    assert (200, 401) == (first, again)
