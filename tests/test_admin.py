"""The admin API: only with the admin token, on a listener of its own; status and dead letters."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from relay.errors import ConfigError, UserRelayError
from relay.keys.crypto import SiteKey
from relay.web import admin
from relay.web.app import create_app
from relay.web.appkeys import ADMIN_URL
from tests.relay_settings import settings, site
from tests.support import AdminClient, event, secret_key, until

ENDPOINTS = [("GET", "/admin/status"), ("GET", "/admin/dead"), ("POST", "/admin/dead/replay"),
             ("POST", "/admin/dead/purge"), ("POST", "/admin/sites/b/test"),
             ("POST", "/admin/sites/b/rotate-key"), ("POST", "/admin/links/a-b/start"),
             ("POST", "/admin/links/a-b/pause"), ("GET", "/admin/no-such-thing")]


def refusing(refused: set[str]) -> Any:
    """A partner that refuses (422) the events of persons whose email is in ``refused``."""
    def respond(document: dict[str, Any]) -> web.Response:
        return web.json_response({"results": [
            {"id": e["id"], "status": 422, "error": "no such role here"}
            if e["user"]["email"] in refused else
            {"id": e["id"], "status": 200, "user_id": 100 + len(refused)}
            for e in document["events"]]})
    return respond


def dead_count(relay: Any) -> int:
    return int(relay.db("SELECT count(*) FROM deliveries WHERE state = 'dead'")[0][0])


async def test_every_endpoint_refuses_a_request_without_the_right_token(
        admin_relay: Any) -> None:
    relay, b, api = await admin_relay(refusing({"user1@example.test"}))
    await relay.post("a", [event("e1", 1, ["create"])])
    await until(lambda: dead_count(relay) == 1)
    wrong = [None, "Bearer not-the-token", f"Basic {api.token}", f"Bearer {api.token}x",
             f"Bearer {api.token[:-1]}", "Bearer ", f"Token {api.token}", api.token]

    answers = {(method, path, str(authorization)[:12]): await api.call(
                   method, path, {"all": True}, authorization=authorization)
               for method, path in ENDPOINTS for authorization in wrong}

    assert {401} == {status for status, _ in answers.values()}
    assert all(api.token not in str(body) for _, body in answers.values())
    assert 1 == dead_count(relay)  # nothing was replayed or purged
    assert [] == relay.db("SELECT site FROM site_keys WHERE previous_sealed IS NOT NULL")
    assert [] == relay.db("SELECT link FROM link_states WHERE paused = 1")
    assert 200 == (await api.call("GET", "/admin/status"))[0]


async def test_the_admin_api_listens_apart_from_the_sites_listener(admin_relay: Any) -> None:
    relay, _, api = await admin_relay()

    public = await relay.client.get("/admin/status",
                                    headers={"Authorization": f"Bearer {api.token}"})

    assert 404 == public.status
    assert relay.url != api.url and api.url.startswith("http://127.0.0.1:")


async def test_without_a_token_the_admin_api_is_off_and_the_log_says_so_once(
        relay_factory: Any, tmp_path: Path) -> None:
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9")], [])

    with capture_logs() as logged:
        relay = await relay_factory(config)

    assert ADMIN_URL not in relay.client.app
    disabled = [e for e in logged if e["event"] == "admin_disabled"]
    assert 1 == len(disabled)
    assert "admin.token_file" in disabled[0]["reason"]
    assert admin.TOKEN_ENV in disabled[0]["reason"]


async def test_the_token_may_come_from_the_environment(
        relay_factory: Any, tmp_path: Path, admin_token: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(admin.TOKEN_ENV, admin_token)
    relay = await relay_factory(settings(tmp_path, [site("a", "http://127.0.0.1:9")], []))
    api = AdminClient(relay.client.app[ADMIN_URL], admin_token)

    assert 200 == (await api.call("GET", "/admin/status"))[0]
    assert 401 == (await api.call("GET", "/admin/status", authorization=None))[0]


@pytest.mark.parametrize("content", ["short-token", "", "a token with spaces in it, long enough"])
def test_a_weak_or_unreadable_token_stops_the_relay_without_quoting_it(
        tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(content)
    config = settings(tmp_path, [], [], admin={"token_file": str(token_file)})
    missing = settings(tmp_path, [], [], admin={"token_file": "nowhere.token"})

    with pytest.raises(ConfigError) as weak:
        admin.load_token(config)
    with pytest.raises(ConfigError) as unreadable:
        admin.load_token(missing)

    assert f"admin.token_file ({token_file})" in str(weak.value)
    assert "at least 32 printable ASCII characters" in str(weak.value)
    assert not content or content not in str(weak.value)
    assert "nowhere.token): cannot read the admin token: No such file or directory" in str(
        unreadable.value)


async def test_a_taken_admin_port_stops_the_relay_naming_it(
        tmp_path: Path, admin_token: str) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin_token)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = settings(tmp_path, [], [], admin={"token_file": str(token_file), "port": port})
        runner = web.AppRunner(create_app(config))  # as userrelay serve starts it

        try:
            with pytest.raises(UserRelayError, match=f"cannot listen on 127.0.0.1:{port} for "
                               r"the admin API \(admin.host, admin.port\)"):
                await runner.setup()
        finally:
            await runner.cleanup()


async def test_status_gives_every_number_per_site_and_link(admin_relay: Any) -> None:
    relay, b, api = await admin_relay(refusing({"user2@example.test"}))
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])
    await until(lambda: dead_count(relay) == 1 and relay.db(
        "SELECT count(*) FROM deliveries WHERE state = 'done'") == [(1,)])

    status, body = await api.call("GET", "/admin/status")

    assert 200 == status
    assert {"at", "sites", "links"} == set(body)
    assert ["a", "b", "c"] == list(body["sites"])
    b_site = body["sites"]["b"]
    assert {"label", "url", "has_key", "last_test", "pending", "oldest_pending_age",
            "last_success_at", "last_failure", "dead_letters", "events_in_per_minute",
            "events_out_per_minute"} == set(b_site)
    assert {"waiting": 0, "ready": 0, "leased": 0} == b_site["pending"]
    assert (1, 1, None) == (b_site["dead_letters"], b_site["events_out_per_minute"],
                            b_site["oldest_pending_age"])
    assert 2 == body["sites"]["a"]["events_in_per_minute"]
    assert b_site["last_success_at"] <= body["at"]
    assert {"status": 422, "error": "no such role here", "state": "dead"} == {
        k: b_site["last_failure"][k] for k in ("status", "error", "state")}
    assert {"a-b", "c-b"} == set(body["links"])
    assert {"site": "a", "remote": "b", "direction": "push", "state": "active"} == {
        k: body["links"]["a-b"][k] for k in ("site", "remote", "direction", "state")}


async def test_dead_letters_are_listed_replayed_to_the_partner_and_purged(
        admin_relay: Any) -> None:
    refused = {"user1@example.test", "user3@example.test", "user4@example.test"}
    relay, b, api = await admin_relay(refusing(refused))
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"]),
                           event("e3", 3, ["create"])])
    await relay.post("c", [event("e4", 4, ["create"])])
    await until(lambda: dead_count(relay) == 3)

    _, everything = await api.call("GET", "/admin/dead")
    _, from_c = await api.call("GET", "/admin/dead", params={"source": "c"})
    _, one = await api.call("GET", "/admin/dead", params={"target": "b", "limit": "1"})
    ids = ",".join(str(d["delivery"]) for d in everything["dead_letters"][:2])
    _, two = await api.call("GET", "/admin/dead", params={"ids": ids})
    refused.clear()  # the partner takes everything from now on
    replay_status, replayed = await api.call("POST", "/admin/dead/replay", {"source": "a"})
    await b.wait_for(lambda: {"e1", "e3"} <= {e["origin"]["event_id"] for e in b.events[3:]})
    await until(lambda: dead_count(relay) == 1)
    purge_status, purged = await api.call("POST", "/admin/dead/purge", {"source": "c"})
    _, after = await api.call("GET", "/admin/dead")

    assert 3 == everything["count"]
    assert {"e1", "e3", "e4"} == {d["event_id"] for d in everything["dead_letters"]}
    assert ["e4"] == [d["event_id"] for d in from_c["dead_letters"]]
    assert (3, 1) == (one["count"], len(one["dead_letters"]))
    assert 2 == two["count"]
    assert (200, 2) == (replay_status, replayed["replayed"])
    assert (200, {"purged": 1}) == (purge_status, purged)
    assert {"count": 0, "dead_letters": []} == after
    assert [("e1", "done", 1), ("e2", "done", 1), ("e3", "done", 1)] == relay.db(
        "SELECT event_id, state, attempts FROM deliveries ORDER BY id")


async def test_a_bad_request_is_refused_naming_what_is_wrong(admin_relay: Any) -> None:
    relay, _, api = await admin_relay()

    answers = [
        await api.call("POST", "/admin/dead/replay", {}),
        await api.call("POST", "/admin/dead/purge", {"since": "last tuesday"}),
        await api.call("POST", "/admin/dead/replay", {"target": "nowhere"}),
        await api.call("GET", "/admin/dead", params={"limit": "0"}),
        await api.call("POST", "/admin/dead/purge", ["all"]),
        await api.call("POST", "/admin/dead/purge", {"everything": True}),
    ]

    assert [
        (400, "name the dead letters to replay: delivery ids, a source, a target, a time window "
              "(since, until), or all"),
        (400, "since: got 'last tuesday'; expected unix seconds, an ISO 8601 time such as "
              "2026-11-27T13:00:00Z, or a duration ago such as 30m, 2h or 1d"),
        (404, "target: no site 'nowhere' is configured; configured sites: a, b, c"),
        (400, "limit: got '0'; expected a whole number from 1 to 10000"),
        (400, "the body must be a JSON object such as {\"target\": \"shop\"}"),
        (400, "everything: unknown; expected any of all, ids, since, source, target, until"),
    ] == [(status, body["error"]) for status, body in answers]


async def test_a_replay_wakes_the_courier_at_once(admin_relay: Any) -> None:
    refused = {"user1@example.test"}
    relay, b, api = await admin_relay(refusing(refused))
    await relay.post("a", [event("e1", 1, ["create"])])
    await until(lambda: dead_count(relay) == 1)
    refused.clear()
    loop = asyncio.get_running_loop()

    started = loop.time()
    await api.call("POST", "/admin/dead/replay", {"all": True})
    await b.wait_for(lambda: len(b.requests) == 2)

    assert loop.time() - started < 3.0  # not at the courier's next look, 5 s away



async def test_a_site_is_tested_and_its_result_shows_in_the_status(admin_relay: Any) -> None:
    relay, b, api = await admin_relay()

    status, report = await api.call("POST", "/admin/sites/b/test")
    _, current = await api.call("GET", "/admin/status")

    assert (200, "b", True) == (status, report["site"], report["passed"])
    assert {"ping", "relay_check"} <= {c["name"] for c in report["checks"]}
    tested = current["sites"]["b"]["last_test"]
    assert (True, [], report["tested_at"]) == (tested["passed"], tested["failed"], tested["at"])


async def test_a_rotated_key_holds_the_sites_links_until_it_is_tested_again(
        admin_relay: Any) -> None:
    relay, b, api = await admin_relay()

    status, rotated = await api.call("POST", "/admin/sites/b/rotate-key", {"grace": "10m"},
                                     recorded=False)  # the one answer that carries a key
    new_key = secret_key(SiteKey(rotated["key"]))
    _, held = await api.call("GET", "/admin/status")
    refused_start = await api.call("POST", "/admin/links/a-b/start")
    b.key = new_key  # pasted into the site
    _, retested = await api.call("POST", "/admin/sites/b/test")
    _, after = await api.call("GET", "/admin/status")

    assert 200 == status and new_key != relay.keys["b"]
    assert rotated["previous_key_accepted_until"] > time.time() + 500
    assert ["a-b", "c-b"] == rotated["links_held_until_tested"]
    assert "draft" == held["links"]["a-b"]["state"]
    assert "site 'b' has not passed a connection test since its key changed" in \
        held["links"]["a-b"]["reason"]
    assert 409 == refused_start[0]
    assert refused_start[1]["error"].startswith("link 'a-b' cannot start: site 'b' has not")
    assert retested["passed"]
    assert "active" == after["links"]["a-b"]["state"]  # it was started: it delivers again
    await relay.post("a", [event("e1", 1, ["create"])])
    await b.wait_for(lambda: len(b.events) == 1)  # signed with the new key


async def test_a_link_is_paused_and_started_again_through_the_admin_api(
        admin_relay: Any) -> None:
    relay, b, api = await admin_relay()

    paused = await api.call("POST", "/admin/links/a-b/pause", {"reason": "site maintenance"})
    await relay.post("a", [event("e1", 1, ["create"])])
    _, held = await api.call("GET", "/admin/status")
    started = await api.call("POST", "/admin/links/a-b/start")
    await b.wait_for(lambda: len(b.events) == 1)

    assert (200, "paused", "site maintenance") == (paused[0], paused[1]["state"],
                                                    paused[1]["reason"])
    assert ("paused", "site maintenance") == (held["links"]["a-b"]["state"],
                                              held["links"]["a-b"]["reason"])
    assert 1 == sum(held["sites"]["b"]["pending"].values())
    assert (200, "active") == (started[0], started[1]["state"])


async def test_an_action_on_an_unknown_site_or_link_names_what_exists(admin_relay: Any) -> None:
    relay, b, api = await admin_relay()

    answers = [await api.call("POST", "/admin/sites/nowhere/test"),
               await api.call("POST", "/admin/sites/nowhere/rotate-key"),
               await api.call("POST", "/admin/links/nowhere/start"),
               await api.call("POST", "/admin/links/a-b/pause", {"why": "x"}),
               await api.call("POST", "/admin/sites/b/rotate-key", {"grace": "soon"})]

    assert [(404, "no site 'nowhere' is configured; configured sites: a, b, c"),
            (404, "no site 'nowhere' is configured; configured sites: a, b, c"),
            (404, "no link 'nowhere' is configured; configured links: a-b, c-b"),
            (400, "why: unknown; expected reason"),
            (400, "grace: got 'soon'; expected a duration such as 30, '30s', '5m', '2h' or "
                  "'1d'")] == [(status, body["error"]) for status, body in answers]


async def test_input_no_database_could_take_is_refused_not_answered_500(admin_relay: Any) -> None:
    relay, _, api = await admin_relay()
    async with aiohttp.ClientSession() as session, session.post(
            f"{api.url}/admin/dead/purge", data=b"[" * 20_000 + b"]" * 20_000,
            headers={"Authorization": f"Bearer {api.token}"}) as resp:
        nested = resp.status, await resp.json()

    answers = [nested,
        await api.call("GET", "/admin/dead", params={"ids": "²"}),
        await api.call("GET", "/admin/dead", params={"limit": "²"}),
        await api.call("GET", "/admin/dead", params={"ids": str(2**63)}),
        await api.call("POST", "/admin/dead/replay", {"ids": [2**64]}),
        await api.call("POST", "/admin/dead/purge", {"ids": [[[[[[[[[[1]]]]]]]]]] * 1}),
        await api.call("POST", "/admin/sites/a/rotate-key", {"grace": 10**400}),
        await api.call("POST", "/admin/links/a-b/pause", {"reason": "\ud800"}),
    ]

    assert [400] * len(answers) == [status for status, _ in answers], answers
    assert ["the body is not JSON", "ids", "limit", "ids", "ids[0]", "ids", "grace", "reason"] == [
        body["error"].split(";")[0].split(":")[0] for _, body in answers]
