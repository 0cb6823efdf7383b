"""Delivery: what reaches a partner site, in which order, and what happens when it fails."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import web

from tests.support import event, until


async def test_an_accepted_event_reaches_the_partner_signed_with_its_key(two_sites: Any) -> None:
    relay, b = await two_sites()

    status, answer = await relay.post("a", [event("e1", 7, ["create", "roles"])])

    assert (status, answer["accepted"], answer["deliveries"]) == (202, 1, 1)
    await b.wait_for(lambda: len(b.events) == 1)
    delivered = b.events[0]
    assert delivered["origin"] == {"site": "a", "event_id": "e1"}
    assert delivered["actions"] == ["create", "roles"]
    assert delivered["user"]["email"] == "user7@example.test"
    assert delivered["user"]["roles"] == ["subscriber"]


def gated(b_ready: asyncio.Event, status: int = 503) -> Any:
    """A partner that answers ``status`` to whole requests until ``b_ready`` is set."""
    async def respond(document: dict[str, Any]) -> web.Response:
        if not b_ready.is_set():
            return web.json_response({"error": "down"}, status=status)
        return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": 500}
                                              for e in document["events"]]})
    return respond


async def test_events_queued_together_go_out_in_one_request(two_sites: Any) -> None:
    relay, b = await two_sites(batch_size=100)

    await relay.post("a", [event(f"e{i}", i, ["create"]) for i in range(1, 51)])

    await b.wait_for(lambda: len(b.events) == 50)
    assert [50] == [len(r["events"]) for r in b.requests]


async def test_a_backlog_is_split_into_batches_of_the_configured_size(two_sites: Any) -> None:
    relay, b = await two_sites(batch_size=10)

    await relay.post("a", [event(f"e{i}", i, ["create"]) for i in range(1, 51)])

    await b.wait_for(lambda: len(b.events) == 50)
    assert all(len(r["events"]) <= 10 for r in b.requests)
    assert sorted(f"e{i}" for i in range(1, 51)) == sorted(e["origin"]["event_id"]
                                                        for e in b.events)


async def test_a_batch_with_one_bad_event_settles_each_event_on_its_own(two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        return web.json_response({"results": [
            {"id": e["id"], "status": 422, "error": "role 'wizard' does not exist here"}
            if e["origin"]["event_id"] == "e2" else {"id": e["id"], "status": 200, "user_id": 9}
            for e in document["events"]]})
    relay, b = await two_sites(respond)

    await relay.post("a", [event(f"e{i}", i, ["create"]) for i in (1, 2, 3)])

    await b.wait_for(lambda: len(b.events) == 3)
    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state IN "
                                 "('ready','leased','waiting')") == [(0,)])
    assert [("e1", "done", None), ("e2", "dead", "role 'wizard' does not exist here"),
            ("e3", "done", None)] == relay.db(
        "SELECT event_id, state, last_error FROM deliveries ORDER BY id")
    assert 1 == len(b.requests)


async def test_retries_follow_the_schedule(two_sites: Any) -> None:
    attempts: list[float] = []

    def respond(document: dict[str, Any]) -> web.Response:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond, retry_schedule=[0.2, 0.4], max_attempts=5)

    await relay.post("a", [event("e1", 1, ["create"])])

    await b.wait_for(lambda: len(b.requests) == 3)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    await until(lambda: relay.db("SELECT state, attempts FROM deliveries") == [("done", 3)])


async def test_retry_after_from_the_site_is_honoured(two_sites: Any) -> None:
    seen: list[float] = []

    def respond(document: dict[str, Any]) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return web.json_response({}, status=429, headers={"Retry-After": "1"})
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond, retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"])])

    await b.wait_for(lambda: len(b.requests) == 2)
    assert seen[1] - seen[0] >= 1.0


async def test_an_event_the_site_refuses_is_dead_lettered_with_its_reason(two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        return web.json_response({"error": "unsupported"}, status=422)
    relay, b = await two_sites(respond)

    await relay.post("a", [event("e1", 1, ["create"])])

    await until(lambda: relay.db("SELECT state FROM deliveries") == [("dead",)])
    (error,) = relay.db("SELECT last_error FROM deliveries")[0]
    assert error.startswith("site answered 422")


async def test_a_delivery_is_dead_lettered_after_the_maximum_attempts(two_sites: Any) -> None:
    relay, b = await two_sites(gated(asyncio.Event()), max_attempts=3, retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"])])

    await until(lambda: relay.db("SELECT state FROM deliveries") == [("dead",)])
    assert [(3, "gave up after 3 attempts; last: site answered 503: {\"error\": \"down\"}")] == \
        relay.db("SELECT attempts, last_error FROM deliveries")
    assert 3 == len(b.requests)


async def test_410_pauses_the_link_and_says_why(two_sites: Any) -> None:
    relay, b = await two_sites(gated(asyncio.Event(), status=410), retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"])])

    await until(lambda: relay.db("SELECT paused FROM link_states") == [(1,)])
    (reason,) = relay.db("SELECT reason FROM link_states WHERE link = 'a-b'")[0]
    assert reason.startswith("site 'b' answered 410 Gone")
    await relay.post("a", [event("e2", 2, ["create"])])
    await asyncio.sleep(0.2)  # a paused link sends nothing more: give it a chance to
    assert 1 == len(b.requests)
    assert [("ready", 0), ("ready", 0)] == relay.db("SELECT state, attempts FROM deliveries")


async def test_a_persons_later_change_waits_while_an_earlier_one_is_retried(
        two_sites: Any) -> None:
    failures = {"e1": 2, "e2": 1}

    def respond(document: dict[str, Any]) -> web.Response:
        results = []
        for e in document["events"]:
            name = e["origin"]["event_id"]
            if failures.get(name, 0) > 0:
                failures[name] -= 1
                results.append({"id": e["id"], "status": 503, "error": "locked"})
            else:
                results.append(b.applied(e))
        return web.json_response({"results": results})
    relay, b = await two_sites(respond, retry_schedule=[0.1])

    def names() -> list[str]:
        return [e["origin"]["event_id"] for e in b.events]

    await relay.post("a", [event("e1", 1, ["create"]), event("o1", 2, ["create"])])
    await relay.post("a", [event("e2", 1, ["password"]),
                           event("o2", 2, ["edit"], first_name="Bo")])
    await b.wait_for(lambda: "e2" in names())
    await relay.post("a", [event("e3", 1, ["roles"])])

    await b.wait_for(lambda: "e3" in names())
    assert ["e1", "e1", "e1", "e2", "e2", "e3"] == [n for n in names() if n.startswith("e")]
    assert names().index("o2") < names().index("e2")  # the other person was not held up


async def test_a_delete_cancels_the_persons_pending_updates(two_sites: Any) -> None:
    ready = asyncio.Event()
    relay, b = await two_sites(gated(ready), retry_schedule=[0.05], max_attempts=1000)
    await relay.post("a", [event("e1", 5, ["create"])])
    await b.wait_for(lambda: len(b.requests) >= 1)

    await relay.post("a", [event("e2", 5, ["edit"], first_name="Al")])
    await relay.post("a", [event("e3", 5, ["roles"])])
    await relay.post("a", [event("e4", 5, ["delete"])])
    ready.set()

    await b.wait_for(lambda: "e4" in {e["origin"]["event_id"] for e in b.events})
    assert ["e1", "e4"] == list(dict.fromkeys(e["origin"]["event_id"] for e in b.events))
    assert [("e3", "superseded")] == relay.db(
        "SELECT event_id, state FROM deliveries WHERE kind = 'update'")


async def test_consecutive_unsent_edits_of_a_person_merge_into_one_delivery(
        two_sites: Any) -> None:
    ready = asyncio.Event()
    relay, b = await two_sites(gated(ready), retry_schedule=[0.05], max_attempts=1000)
    await relay.post("a", [event("e1", 5, ["create"])])
    await b.wait_for(lambda: len(b.requests) >= 1)

    await relay.post("a", [event("e2", 5, ["edit"], first_name="Al")])
    await relay.post("a", [event("e3", 5, ["metadata"], meta={"city": "Oslo"})])
    ready.set()

    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state='done'") == [(2,)])
    last = b.events[-1]
    assert (["edit", "metadata"], "Al", {"city": "Oslo"}, ["e2", "e3"]) == (
        last["actions"], last["user"]["first_name"], last["user"]["meta"], last["merged"])


# --- what an answer means (relay/model/answers.py) ------------------------------------------------

async def test_a_2xx_without_a_result_per_event_is_a_failed_attempt_not_a_delivery(
        two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:  # a maintenance or firewall page
        return web.Response(text="<html><body>Back soon</body></html>",
                            content_type="text/html")
    relay, b = await two_sites(respond, max_attempts=2, retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])

    await until(lambda: relay.db("SELECT DISTINCT state FROM deliveries") == [("dead",)])
    rows = relay.db("SELECT attempts, last_status, last_error FROM deliveries")
    assert [2, 2] == [r[0] for r in rows]
    assert all(r[1] == 200 and r[2].startswith("gave up after 2 attempts; last: site answered "
                                               "200 without a JSON body of results")
               and "Back soon" in r[2] for r in rows), rows


async def test_a_malformed_result_status_is_a_failed_attempt_and_ends_in_a_dead_letter(
        two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        return web.json_response({"results": [{"id": e["id"], "status": "200 OK"}
                                              for e in document["events"]]})
    relay, b = await two_sites(respond, max_attempts=3, retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"])])

    await until(lambda: relay.db("SELECT state FROM deliveries") == [("dead",)])
    ((attempts, error),) = relay.db("SELECT attempts, last_error FROM deliveries")
    assert 3 == attempts == len(b.requests)
    assert error.startswith('gave up after 3 attempts; last: site answered 200 with '
                            'results[0].status "200 OK", not an HTTP status'), error


async def test_a_retry_after_that_is_not_a_number_is_ignored_not_fatal(two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        if len(b.requests) == 1:
            return web.json_response({}, status=429, headers={"Retry-After": "²"})
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond, retry_schedule=[0.01])

    await relay.post("a", [event("e1", 1, ["create"])])

    await until(lambda: relay.db("SELECT state, attempts FROM deliveries") == [("done", 2)])


async def test_only_the_events_poisoning_a_refused_batch_are_dead_lettered(
        two_sites: Any) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        # As WordPress does with a body it cannot read: the whole request is refused.
        if any(e["user"].get("first_name") == "poison" for e in document["events"]):
            return web.json_response({"code": "rest_invalid_json"}, status=400)
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond, batch_size=100)

    await relay.post("a", [event(f"e{i}", i, ["create"],
                                 first_name="poison" if i in (3, 7) else "") for i in range(1, 9)])

    await until(lambda: relay.db("SELECT count(*) FROM deliveries WHERE state IN "
                                 "('ready', 'leased', 'waiting')") == [(0,)])
    assert [("e3", "dead"), ("e7", "dead")] == relay.db(
        "SELECT event_id, state FROM deliveries WHERE state != 'done' ORDER BY id")
    assert 6 == len({e["origin"]["event_id"] for r in b.requests for e in r["events"]
                     if e["user"]["first_name"] != "poison"} & {f"e{i}" for i in range(1, 9)})
    (error,) = relay.db("SELECT last_error FROM deliveries WHERE event_id = 'e3'")[0]
    assert error.startswith("site answered 400"), error
    assert all(n == 1 for (n,) in relay.db("SELECT attempts FROM deliveries"))
