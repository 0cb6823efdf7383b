"""Observability: /metrics counts exactly what happened, /readyz says whether work can be done."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from relay.constants import PENDING_STATES
from relay.web.appkeys import COURIER_TASKS, DATABASE
from tests.support import Relay, event, until
from tests.test_store import cap_pages

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(relay: Relay) -> Samples:
    resp = await relay.client.get("/metrics")
    assert 200 == resp.status
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(await resp.text())
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_metrics_count_requests_events_and_deliveries_exactly(two_sites: Any) -> None:
    relay, b = await two_sites()
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])],
                     webhook_id="msg_1")
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])],
                     webhook_id="msg_1")  # the same request again: changes nothing
    await relay.post("a", [event("e2", 2, ["create"]), event("e3", 3, ["create"])])
    echo = event("e4", 4, ["edit"])
    echo["origin"] = {"site": "b", "event_id": "x1"}
    await relay.post("a", [echo])
    await relay.post("a", [event("e5", 5, ["create"])], key=relay.keys["b"])  # wrong key
    await relay.client.post("/v1/sites/nowhere/events", data=b"{}")
    await b.wait_for(lambda: len(b.events) == 3)
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state = 'done'")
                == [(3,)])

    samples = await scrape(relay)

    requests = "userrelay_ingest_requests_total"
    assert 4 == value(samples, requests, site="a", status="202")
    assert 1 == value(samples, requests, site="a", status="401")
    assert 1 == value(samples, requests, site="_unknown", status="404")
    events = "userrelay_ingest_events_total"
    assert (3, 3, 1) == (value(samples, events, site="a", outcome="accepted"),
                         value(samples, events, site="a", outcome="duplicate"),
                         value(samples, events, site="a", outcome="echo"))
    deliveries = "userrelay_deliveries_total"
    assert (3, 0, 0) == (value(samples, deliveries, target="b", outcome="done"),
                         value(samples, deliveries, target="b", outcome="retry"),
                         value(samples, deliveries, target="b", outcome="dead"))
    assert len(b.requests) == value(samples, "userrelay_delivery_seconds_count", target="b")
    assert all(0 == value(samples, "userrelay_queue_depth", target=t, state=s)
               for t in ("a", "b") for s in PENDING_STATES)


async def test_queue_depth_matches_the_database_and_failures_are_counted(
        two_sites: Any) -> None:
    def refuse_or_fail(document: dict[str, Any]) -> web.Response:
        return web.json_response({"results": [
            {"id": e["id"], "status": 422 if e["origin"]["event_id"] == "e9" else 503}
            for e in document["events"]]})
    relay, b = await two_sites(refuse_or_fail, retry_schedule=["1h"])
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"]),
                           event("e9", 9, ["create"])])
    await relay.post("a", [event("e3", 1, ["edit"], first_name="X")])  # waits behind e1
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state IN "
                                 "('ready', 'dead') AND attempts = 1") == [(3,)])

    samples = await scrape(relay)

    in_db = dict(relay.db("SELECT state, count(*) FROM deliveries GROUP BY state"))
    assert {"ready": 2, "waiting": 1, "dead": 1} == in_db
    assert {s: in_db.get(s, 0) for s in PENDING_STATES} == {
        s: value(samples, "userrelay_queue_depth", target="b", state=s) for s in PENDING_STATES}
    assert 1 == value(samples, "userrelay_dead_letters", target="b")
    assert (0, 2, 1) == tuple(value(samples, "userrelay_deliveries_total", target="b",
                                    outcome=o) for o in ("done", "retry", "dead"))


async def test_deliveries_held_by_a_paused_link_are_counted(two_sites: Any) -> None:
    def gone(document: dict[str, Any]) -> web.Response:
        return web.json_response({}, status=410)
    relay, b = await two_sites(gone)
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])
    await until(lambda: relay.db("SELECT paused FROM link_states") == [(1,)])

    samples = await scrape(relay)

    assert 2 == value(samples, "userrelay_deliveries_total", target="b", outcome="paused")
    assert 2 == value(samples, "userrelay_queue_depth", target="b", state="ready")


async def test_metrics_show_no_key_and_no_user_data(two_sites: Any) -> None:
    relay, b = await two_sites()
    await relay.post("a", [event("e1", 1, ["create", "password"], email="someone@secret.test")])
    await b.wait_for(lambda: len(b.events) == 1)

    text = await (await relay.client.get("/metrics")).text()

    for secret in (relay.keys["a"].secret, relay.keys["b"].secret, "someone@secret.test",
                   "$P$B"):
        assert secret not in text


async def test_readyz_is_200_when_events_can_be_stored_and_delivered(two_sites: Any) -> None:
    relay, _ = await two_sites()

    resp = await relay.client.get("/readyz")

    assert (200, {"status": "ready"}) == (resp.status, await resp.json())


async def test_readyz_is_503_while_the_database_cannot_be_written(two_sites: Any) -> None:
    relay, _ = await two_sites()
    db = relay.client.server.app[DATABASE]
    await db.call(cap_pages, 0)  # the disk is full

    resp = await relay.client.get("/readyz")
    answer = await resp.json()

    assert 503 == resp.status
    assert {"status": "not ready", "problems": {
        "database": "cannot be written: database or disk is full"}} == answer
    await db.call(cap_pages, 100)  # space again
    assert 200 == (await relay.client.get("/readyz")).status


async def test_readyz_names_a_courier_that_is_not_running(two_sites: Any) -> None:
    relay, _ = await two_sites()
    tasks = relay.client.server.app[COURIER_TASKS]
    courier_b = next(t for t in tasks if t.get_name() == "courier-b")
    courier_b.cancel()
    await until(courier_b.done)

    resp = await relay.client.get("/readyz")

    assert 503 == resp.status
    assert {"couriers": "not running: courier-b"} == json.loads(await resp.text())["problems"]
