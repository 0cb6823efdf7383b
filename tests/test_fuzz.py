"""Bad input at every route: refused with a 400 naming the field, never a 500.

First the inputs that once got through or broke the relay, each by name; then a bounded
Hypothesis run against a real relay process (the longer run is ``bench/fuzz.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.errors import InvalidEvent
from relay.events import MAX_DEPTH, MAX_META_DEPTH, parse_batch
from tests.support import event


def body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def with_user(**fields: Any) -> bytes:
    e = event("e1", 1, ["create", "metadata"])
    e["user"].update(fields)
    return body(e)


def with_event(**fields: Any) -> bytes:
    e = event("e1", 1, ["create"])
    e.update(fields)
    return body(e)


def raw_user_id(text: str) -> bytes:
    return with_user(id=0).replace(b'"id": 0', b'"id": ' + text.encode())


UNSTORABLE = {
    "occurred_at NaN": (with_event(occurred_at=float("nan")), "events[0].occurred_at"),
    "occurred_at Infinity": (with_event(occurred_at=float("inf")), "events[0].occurred_at"),
    "occurred_at 1e400": (with_event(occurred_at=0).replace(b'"occurred_at": 0',
                                                            b'"occurred_at": 1e400'),
                          "events[0].occurred_at"),
    "NaN in a meta value": (with_user(meta={"score": float("nan")}),
                            "events[0].user.meta.score"),
    "user.id 2^63": (with_user(id=2**63), "events[0].user.id"),
    "user.id of 4,300 digits": (raw_user_id("9" * 4300), "events[0].user.id"),
    "user.id '²'": (with_user(id="²"), "events[0].user.id"),
    "user.id 0": (with_user(id=0), "events[0].user.id"),
    "lone surrogate in the login": (with_user(login="al\ud800ice"), "events[0].user.login"),
    "lone surrogate in the email": (with_user(email="\udfffa@example.test"),
                                    "events[0].user.email"),
    "lone surrogate in the event id": (with_event(id="e\udc80"), "events[0].id"),
    "lone surrogate in a meta key": (with_user(meta={"k\ud800": "v"}), "events[0].user.meta"),
    "meta nested 600 deep": (with_user(meta={"deep": nested(600)}),
                             "events[0].user.meta.deep"),
    f"meta nested {MAX_META_DEPTH + 1} deep": (with_user(meta={"deep": nested(
        MAX_META_DEPTH + 1)}), "events[0].user.meta.deep"),
    "meta value over 64 KiB": (with_user(meta={"big": "x" * 65_537}),
                               "events[0].user.meta.big"),
    "meta key over 255 characters": (with_user(meta={"k" * 256: "v"}), "events[0].user.meta"),
    "login over 60 characters": (with_user(login="l" * 61), "events[0].user.login"),
    "email over 100 characters": (with_user(email="e" * 90 + "@example.test"),
                                  "events[0].user.email"),
    "display name over 250 characters": (with_user(display_name="d" * 251),
                                         "events[0].user.display_name"),
    "url over 100 characters": (with_user(url="https://example.test/" + "u" * 80),
                                "events[0].user.url"),
    "JSON nested 20,000 deep": (b"[" * 20_000 + b"]" * 20_000, "the body"),
    "invalid UTF-8": (with_user(login="alice").replace(b"alice", b"al\xffce"), "the body"),
}


@pytest.mark.parametrize("name", list(UNSTORABLE))
def test_what_a_wordpress_site_cannot_store_is_refused_naming_the_field(name: str) -> None:
    raw, field = UNSTORABLE[name]

    with pytest.raises(InvalidEvent) as refused:
        parse_batch(raw)

    assert refused.value.message.startswith(field), refused.value.message


def test_what_a_wordpress_site_can_store_is_taken() -> None:
    events = parse_batch(with_user(id=str(2**63 - 1), login="l" * 60, display_name="d" * 250,
                                   meta={"deep": nested(MAX_META_DEPTH), "emoji": "😀",
                                         "big": "x" * 65_536, "n": -(2**63 - 1)}))

    assert (2**63 - 1, "l" * 60) == (events[0].user_id, events[0].user["login"])
    assert MAX_DEPTH > MAX_META_DEPTH


@pytest.mark.parametrize("name", ["occurred_at NaN", "lone surrogate in the login",
                                  "meta nested 600 deep", "user.id 2^63"])
async def test_a_signed_event_a_site_cannot_store_is_refused_and_nothing_is_queued(
        two_sites: Any, name: str) -> None:
    relay, _ = await two_sites()
    events = json.loads(UNSTORABLE[name][0].decode(), parse_constant=float)["events"]

    status, answer = await relay.post("a", events)

    assert 400 == status
    assert answer["error"].startswith(UNSTORABLE[name][1]), answer
    assert [(0,)] == relay.db("SELECT count(*) FROM deliveries")
