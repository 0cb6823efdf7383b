"""Setting up and running a link on real WordPress as an admin does, with the ``userrelay``
command: test both sites, start the link, pause it, rotate a key."""

from __future__ import annotations

import re
import time

import pytest

from relay.keys.crypto import SiteKey
from tests.e2e.test_sync import create, unique
from tests.e2e.world import World, user, wait_until
from tests.support import secret_key

pytestmark = pytest.mark.wordpress


def link_state(world: World) -> tuple[int, str | None]:
    rows = world.relay.db("SELECT paused, reason FROM link_states WHERE link = 'a-b'")
    return rows[0] if rows else (0, None)


def queued_for_b(world: World) -> int:
    return int(world.relay.db("SELECT count(*) FROM deliveries WHERE target = 'b' AND state "
                              "IN ('ready', 'waiting')")[0][0])


def not_delivered(world: World, email: str) -> None:
    """The change reached the relay and waits there; it is not on site b."""
    world.quiet_outboxes()
    wait_until("the change waits at the relay", lambda: queued_for_b(world) >= 1)
    time.sleep(2)  # a negative: give the relay the time it would take to deliver
    assert user(world.b, email) is None


def test_sites_test_on_real_wordpress_is_successful(world: World) -> None:
    world.link("push")

    result = world.relay.userrelay("sites", "test", "a")

    assert 0 == result.returncode, result.stdout + result.stderr
    assert "Connection Test Successful" in result.stdout
    assert re.search(r"ok +site -> relay ping +the site signed a ping to the relay at "
                     rf"{re.escape(world.relay.url)} and the relay accepted it", result.stdout)


def test_a_wrong_key_in_wordpress_fails_the_test_naming_the_key_and_nothing_arrives(
        world: World) -> None:
    world.link("push")
    right = world.b.constants["USERRELAY_KEY"]
    world.b.set_constants({"USERRELAY_KEY": secret_key(SiteKey.generate()).secret})
    try:
        result = world.relay.userrelay("sites", "test", "b")
        login, email = unique("wrongkey")
        create(world.a, login, email)
        paused = wait_until("the relay pauses the link", lambda: link_state(world)[0] == 1)
    finally:
        world.b.set_constants({"USERRELAY_KEY": right})

    assert 1 == result.returncode
    assert ("the key pasted into WordPress differs from the relay's key for site 'b'"
            in result.stdout)
    assert "Connection Test Failed" in result.stdout
    assert paused and "refused our signature (401)" in str(link_state(world)[1])
    assert user(world.b, email) is None
    world.admin("sites", "test", "b")
    world.admin("links", "start", "a-b")
    wait_until("the user reaches b once the link is started again",
               lambda: user(world.b, email) is not None)


def test_links_pause_and_start_stop_and_resume_delivery(world: World) -> None:
    world.link("push")
    paused = world.admin("links", "pause", "a-b", "--reason", "moving servers")
    login, email = unique("paused")

    create(world.a, login, email)

    assert "paused: moving servers" in paused
    not_delivered(world, email)
    world.admin("links", "start", "a-b")
    wait_until("the user reaches b once the link is started",
               lambda: user(world.b, email) is not None)


def test_a_rotated_key_pasted_into_the_site_and_tested_resumes_delivery(world: World) -> None:
    world.link("push")
    rotated = world.relay.userrelay("keys", "rotate", "b", keep_output=False)
    found = re.search(r"define\( 'USERRELAY_KEY', '(whsec_[^']+)' \);", rotated.stdout)
    assert 0 == rotated.returncode and found, rotated.stderr
    new = secret_key(SiteKey(found.group(1))).secret
    login, email = unique("rotated")

    create(world.a, login, email)

    not_delivered(world, email)
    assert ("draft (it was started: it delivers again once tested): site 'b' has not passed a "
            "connection test since its key changed") in world.admin("links", "list")
    world.b.set_constants({"USERRELAY_KEY": new})
    assert "Connection Test Successful" in world.admin("sites", "test", "b")
    wait_until("the user reaches b once b passed its test with the new key",
               lambda: user(world.b, email) is not None)
