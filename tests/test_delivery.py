"""Delivery: what reaches a partner site, in which order, and what happens when it fails."""

from __future__ import annotations

from typing import Any

from tests.support import event


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
