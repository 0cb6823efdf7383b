"""After a relay outage, on real WordPress: the relay tells the sites it is back, and a change
waiting in a site's outbox arrives at once, not when the plugin's backoff step ends."""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.world import World, user, wait_until

pytestmark = pytest.mark.wordpress


def outbox_head(site: Site) -> dict[str, Any] | None:
    rows = site.db_query("SELECT attempts, next_attempt_at FROM wp_userrelay_outbox "
                         "ORDER BY id LIMIT 1")
    return {k: int(v or 0) for k, v in rows[0].items()} if rows else None


def visit(site: Site) -> None:
    """A visitor's page view: what gives WordPress the chance to retry its outbox."""
    with urllib.request.urlopen(site.url + "/", timeout=30) as page:
        page.read()


def wait_out_backoff_steps(site: Site, steps: int) -> dict[str, Any]:
    """Visit the site until its outbox head failed ``steps`` times; the head then."""
    def failed_enough() -> dict[str, Any] | None:
        visit(site)
        head = outbox_head(site)
        return head if head and head["attempts"] >= steps else None
    return wait_until(f"site {site.name}'s outbox fails {steps} times", failed_enough,  # type: ignore[no-any-return]
                      timeout=120, every=1)


def test_a_change_made_while_the_relay_was_down_arrives_at_once_when_it_returns(
        world: World) -> None:
    world.link("push")
    world.relay.stop()
    email = f"outage{uuid.uuid4().hex[:8]}@example.test"
    world.a.php(f"wp_insert_user(['user_login' => '{email.split('@')[0]}', "
                f"'user_email' => '{email}', 'user_pass' => 'Outage-Pass-1']);")
    head = wait_out_backoff_steps(world.a, 3)  # 10 s, 30 s, then a 2-minute step

    world.relay.start()
    started = time.time()
    wait_until("the change reaches site b", lambda: user(world.b, email), timeout=60,
               every=0.2)
    arrived = time.time()

    assert head["next_attempt_at"] - started > 60, "the outbox was not waiting long enough"
    assert arrived < head["next_attempt_at"], "it arrived only when the backoff ended"
