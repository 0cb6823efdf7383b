"""The status numbers are right under load: what was sent, delivered, held and refused, exactly.

Two sites send a known mix of events at once, in many concurrent requests, to a partner that
takes most of them, refuses some for good (422: dead letters) and asks for others to be sent
again later (503: pending, and each such person's later change waits behind them). Then the
admin API's status and ``userrelay status --json`` must both give exactly those numbers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.relay_settings import config_file
from tests.support import event, run_cli, until

OK, REFUSED, HELD = 40, 10, 10  # persons per source site
SOURCES = ("a", "c")


def partner() -> Any:
    """Takes everyone (one user of its own per email), but refuses the "refused" persons and
    holds the "held" ones."""
    user_ids: dict[str, int] = {}

    def respond(document: dict[str, Any]) -> web.Response:
        results = []
        for e in document["events"]:
            email = e["user"]["email"]
            kind = email.split("-")[1]
            if kind == "refused":
                results.append({"id": e["id"], "status": 422,
                                "error": "role 'wizard' is unknown"})
            elif kind == "held":
                results.append({"id": e["id"], "status": 503, "error": "try again later"})
            else:
                results.append({"id": e["id"], "status": 200,
                                "user_id": user_ids.setdefault(email, len(user_ids) + 1)})
        return web.json_response({"results": results})
    return respond


def requests_of(source: str) -> list[list[dict[str, Any]]]:
    """One request per person: a create; the held persons' requests also carry an edit."""
    requests = []
    number = 0
    for kind, persons in (("ok", OK), ("refused", REFUSED), ("held", HELD)):
        for _ in range(persons):
            number += 1
            email = f"{source}-{kind}-{number}@example.test"
            events = [event(f"{source}-{number}-create", number, ["create"], email=email)]
            if kind == "held":
                events.append(event(f"{source}-{number}-edit", number, ["edit"], email=email,
                                    first_name="Later"))
            requests.append(events)
    return requests


def counts(relay: Any) -> dict[str, int]:
    return dict(relay.db("SELECT state || CASE WHEN state = 'ready' AND attempts = 0 "
                         "THEN '-unsent' ELSE '' END, count(*) FROM deliveries GROUP BY 1"))


async def test_the_status_numbers_are_right_under_load(admin_relay: Any, tmp_path: Path) -> None:
    relay, b, api = await admin_relay(partner(), retry_schedule=["1h"], in_flight=4, batch_size=7)
    sent = {source: requests_of(source) for source in SOURCES}

    answers = await asyncio.gather(*(relay.post(source, events)
                                     for source in SOURCES for events in sent[source]))
    # A request sent again (its webhook-id kept) and events sent again in a new one: no change.
    repeat = await relay.post("a", sent["a"][0], webhook_id="msg-again")
    again = await relay.post("a", sent["a"][0], webhook_id="msg-again")
    resent = await relay.post("c", sent["c"][1] + sent["c"][2])
    delivered = len(SOURCES) * OK
    dead = len(SOURCES) * REFUSED
    held = len(SOURCES) * HELD
    await until(lambda: counts(relay) == {"done": delivered, "dead": dead, "ready": held,
                                          "waiting": held}, timeout=20)

    _, status = await api.call("GET", "/admin/status")
    path = config_file(relay.config, tmp_path / "relay.yaml")
    command = json.loads(run_cli("status", "--json", "--config", str(path)).stdout)
    text = run_cli("status", "--config", str(path)).stdout

    per_source = OK + REFUSED + 2 * HELD
    assert {202} == {status for status, _ in answers}
    assert per_source * len(SOURCES) == sum(answer["accepted"] for _, answer in answers)
    assert ((202, 0, 1), (202, 0, 1), (202, 0, 2)) == tuple(
        (s, a["accepted"], a["duplicates"]) for s, a in (repeat, again, resent))
    for current in (status, command):
        b_site = current["sites"]["b"]
        assert {"waiting": held, "ready": held, "leased": 0} == b_site["pending"]
        assert (dead, delivered) == (b_site["dead_letters"], b_site["events_out_per_minute"])
        assert b_site["last_failure"]["status"] in (422, 503)
        assert b_site["oldest_pending_age"] >= 0 and b_site["last_success_at"] is not None
        for source in SOURCES:
            assert (per_source, 0, 0) == (current["sites"][source]["events_in_per_minute"],
                                          current["sites"][source]["dead_letters"],
                                          sum(current["sites"][source]["pending"].values()))
        assert {"a-b": "active", "c-b": "active"} == {
            link: lk["state"] for link, lk in current["links"].items()}
    assert f"queue: {held} waiting, {held} ready, 0 leased" in text
    assert f"dead letters {dead}" in text
    assert f"last minute: {per_source} events in, 0 delivered" in text
    assert f"last minute: 0 events in, {delivered} delivered" in text
