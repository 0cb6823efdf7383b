"""Identity and the loop guard: one person across sites, and no ping-pong on bidirectional links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.relay_settings import settings, site
from tests.support import event

ALL = ["create", "edit", "delete", "password", "roles", "metadata"]


async def bidirectional(partner_factory: Any, relay_factory: Any, tmp_path: Path,
                        match_by: str = "email") -> Any:
    a, b = await partner_factory(), await partner_factory()
    config = settings(tmp_path, [site("a", a.url), site("b", b.url)],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "bidirectional",
                        "incoming": ALL, "outgoing": ALL, "match_by": match_by}])
    relay = await relay_factory(config)
    a.key, b.key = relay.keys["a"], relay.keys["b"]
    return relay, a, b


async def test_a_change_applied_on_the_partner_and_reported_back_is_dropped(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    await relay.post("a", [event("a-1", 7, ["create"])])
    await b.wait_for(lambda: len(b.events) == 1)
    applied = b.events[0]

    # Site b's plugin applied it and, had it not suppressed the echo, reports it back:
    echo = event("b-1", 1001, ["edit"], email=applied["user"]["email"])
    echo["origin"] = applied["origin"]
    status, answer = await relay.post("b", [echo])

    assert (202, 1, 0) == (status, answer["echoes"], answer["deliveries"])
    assert [] == a.events
    assert [] == relay.db("SELECT * FROM deliveries WHERE target = 'a'")


async def test_a_partners_answer_teaches_the_relay_its_user_id(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    await relay.post("a", [event("a-1", 7, ["create"])])
    await b.wait_for(lambda: len(b.events) == 1)

    await relay.post("a", [event("a-2", 7, ["edit"], first_name="Ann")])

    await b.wait_for(lambda: len(b.events) == 2)
    assert [None, 1001] == [e["match"]["user_id"] for e in b.events]


async def test_an_email_change_keeps_the_same_person_on_the_partner(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    await relay.post("a", [event("a-1", 7, ["create"], email="old@example.test")])
    await b.wait_for(lambda: len(b.events) == 1)

    await relay.post("a", [event("a-2", 7, ["edit"], email="new@example.test")])

    await b.wait_for(lambda: len(b.events) == 2)
    assert ({"by": "email", "user_id": 1001}, "new@example.test") == (
        b.events[1]["match"], b.events[1]["user"]["email"])
    assert [(1,)] == relay.db("SELECT count(*) FROM persons")


async def test_first_contact_matches_an_existing_person_by_email(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    await relay.post("a", [event("a-1", 7, ["create"], email="sam@example.test")])
    await b.wait_for(lambda: len(b.events) == 1)

    # b's own user 1001 (the one it applied a's create to) changes on b:
    await relay.post("b", [event("b-1", 1001, ["edit"], email="sam@example.test",
                                 first_name="Sam")])

    await a.wait_for(lambda: len(a.events) == 1)
    assert 7 == a.events[0]["match"]["user_id"]
    assert [(1,)] == relay.db("SELECT count(*) FROM persons")


async def test_matching_by_login_ignores_a_different_email(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path, "login")
    await relay.post("a", [event("a-1", 7, ["create"], email="one@example.test", login="kim")])
    await relay.post("b", [event("b-1", 3, ["create"], email="two@example.test", login="kim")])

    await b.wait_for(lambda: len(b.events) == 1)
    await a.wait_for(lambda: len(a.events) == 1)

    assert [(1,)] == relay.db("SELECT count(*) FROM persons")
    assert ("login", 7) == (a.events[0]["match"]["by"], a.events[0]["match"]["user_id"])


async def test_a_user_without_an_email_is_matched_by_login_on_a_link_matching_by_email(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    created = event("a-1", 7, ["create"])
    created["user"]["email"] = ""

    status, _ = await relay.post("a", [created])

    assert 202 == status
    await b.wait_for(lambda: len(b.events) == 1)
    assert ({"by": "login", "user_id": None}, "") == (b.events[0]["match"],
                                                      b.events[0]["user"]["email"])
    # b's own user with that login, never seen by the relay, is the same person:
    theirs = event("b-1", 555, ["edit"], login="user7")
    theirs["user"]["email"] = ""
    await relay.post("b", [theirs])
    await a.wait_for(lambda: len(a.events) == 1)
    assert {"by": "login", "user_id": 7} == a.events[0]["match"]
    assert [(1,)] == relay.db("SELECT count(*) FROM persons")


async def test_a_login_rename_reaches_the_partner_with_the_login_it_replaced(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    relay, a, b = await bidirectional(partner_factory, relay_factory, tmp_path)
    await relay.post("a", [event("a-1", 7, ["create"])])
    await b.wait_for(lambda: len(b.events) == 1)

    await relay.post("a", [event("a-2", 7, ["edit"], login="ann", renamed_from="user7")])

    await b.wait_for(lambda: len(b.events) == 2)
    assert ("ann", "user7", 1001) == (b.events[1]["user"]["login"],
                                      b.events[1]["user"]["renamed_from"],
                                      b.events[1]["match"]["user_id"])
    assert [(1,)] == relay.db("SELECT count(*) FROM persons")
