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


async def user_status(relay: Any, site: str, user_ids: Any, signer: str | None = None,
                      webhook_id: str | None = None) -> tuple[int, Any]:
    body = json.dumps(signatures.envelope("user-status", site, user_ids=user_ids)).encode()
    headers = signatures.headers(relay.keys[signer or site], body, Direction.TO_RELAY,
                                 webhook_id)
    resp = await relay.client.post(f"/v1/sites/{site}/user-status", data=body, headers=headers)
    return resp.status, await resp.json()


def refusing_user_2(document: dict[str, Any]) -> web.Response:
    return web.json_response({"results": [
        {"id": e["id"], "status": 422, "error": "role 'wizard' does not exist on this site"}
        if e["user"]["login"] == "user2" else {"id": e["id"], "status": 200, "user_id": 500}
        for e in document["events"]]})


async def test_user_status_says_delivered_refused_and_filtered_per_target(
        partner_factory: Any, relay_factory: Any, tmp_path: Any) -> None:
    from tests.relay_settings import settings, site
    b = await partner_factory(refusing_user_2)
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                        "outgoing": ["create", "edit", "roles"],
                        "roles": {"outgoing": ["customer", "wizard"]}}], max_attempts=1)
    relay = await relay_factory(config)
    b.key = relay.keys["b"]
    made = [event(f"e{i}", i, ["create", "roles"]) for i in (1, 2, 3)]
    made[0]["user"]["roles"], made[1]["user"]["roles"] = ["customer"], ["wizard"]
    made[2]["user"]["roles"] = ["editor"]
    await relay.post("a", made)
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state IN "
                                 "('done', 'dead')") == [(2,)])

    code, answer = await user_status(relay, "a", [1, 2, 3, 99])

    assert 200 == code
    states = {uid: [(s["target"], s["link"], s["state"]) for s in entries]
              for uid, entries in answer["users"].items()}
    assert {"1": [("b", "a-b", "delivered")], "2": [("b", "a-b", "refused")],
            "3": [("b", "a-b", "filtered")], "99": []} == states
    assert "role 'wizard' does not exist" in answer["users"]["2"][0]["reason"]
    assert answer["users"]["3"][0]["reason"] == (
        "roles.outgoing of a-b: roles editor not among customer, wizard")


async def test_user_status_says_why_a_change_waits(two_sites: Any) -> None:
    from relay.db.links import LinkBook
    relay, _ = await two_sites()
    with LinkBook(relay.config) as book:
        book.pause("a-b", "maintenance")
    await relay.post("a", [event("e1", 1, ["create"])])

    _, answer = await user_status(relay, "a", [1])

    [entry] = answer["users"]["1"]
    assert ("waiting", "the link is paused: maintenance") == (entry["state"], entry["reason"])


async def test_user_status_never_tells_a_site_of_another_sites_users(admin_relay: Any) -> None:
    relay, _, _ = await admin_relay()
    await relay.post("a", [event("e1", 1, ["create"])])
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state = 'done'")
                == [(1,)])

    own_status, own = await user_status(relay, "c", [1])           # c's user 1: not a's
    other_key, _ = await user_status(relay, "a", [1], signer="c")  # a's, signed by c
    as_target, seen_by_b = await user_status(relay, "b", [1, 1001])

    assert (200, {"users": {"1": []}}) == (own_status, own)
    assert 401 == other_key
    assert {"users": {"1": [], "1001": []}} == seen_by_b


async def test_user_status_refuses_a_bad_list_of_ids_and_a_second_use(two_sites: Any) -> None:
    relay, _ = await two_sites()

    bad = [await user_status(relay, "a", ids) for ids in ([], "1", [0], [True],
                                                          list(range(1, 102)))]
    first = await user_status(relay, "a", [1], webhook_id="msg_once")
    again = await user_status(relay, "a", [1], webhook_id="msg_once")

    assert [400] * 5 == [code for code, _ in bad]
    assert bad[0][1]["error"].startswith("user_ids: got []; expected a list of 1 to 100")
    assert (200, 401) == (first[0], again[0])
