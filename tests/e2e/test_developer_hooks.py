"""The plugin's hooks for developers, on real WordPress: a must-use plugin of the test adds
filters on site a, scoped to the logins the test makes (the session's world is shared)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_sync import arrives, create, unique
from tests.e2e.world import World, user

pytestmark = pytest.mark.wordpress

OUTGOING = r"""<?php
add_filter('userrelay_outgoing_event', function ($event, $user_id) {
    $login = get_userdata($user_id) ? get_userdata($user_id)->user_login : '';
    if (0 === strpos($login, 'hookdrop')) {
        return false;
    }
    if (0 === strpos($login, 'hookchange')) {
        $event['user']['first_name'] = 'Changed by a filter';
        $event['actions'][] = 'metadata';
        $event['user']['meta'] = array_merge((array) ($event['user']['meta'] ?? []), [
            'favourite_colour' => 'blue',
            'wp_capabilities' => ['administrator' => true],  // never sent, whatever a filter says
        ]);
    }
    return $event;
}, 10, 2);
"""


@pytest.fixture
def hooked(world: World) -> Iterator[World]:
    folder = world.a.path / "wp-content" / "mu-plugins"
    folder.mkdir(exist_ok=True)
    hooks = folder / "userrelay-test-hooks.php"
    hooks.write_text(OUTGOING)
    world.link("push")
    try:
        yield world
    finally:
        hooks.unlink()


def test_an_outgoing_event_dropped_by_a_filter_is_not_sent(hooked: World) -> None:
    dropped_login, dropped_email = unique("hookdrop")
    kept_login, kept_email = unique("hookkept")

    create(hooked.a, dropped_login, dropped_email)
    create(hooked.a, kept_login, kept_email)

    arrives(hooked.b, kept_email)
    hooked.quiet()
    assert user(hooked.b, dropped_email) is None


def test_an_outgoing_event_changed_by_a_filter_arrives_changed_without_protected_meta(
        hooked: World) -> None:
    login, email = unique("hookchange")

    create(hooked.a, login, email, first_name="Ada")

    there = arrives(hooked.b, email, lambda u: u["meta"] == "blue", "the filtered create")
    assert ("Changed by a filter", ["subscriber"]) == (there["first_name"], there["roles"])
    sent = hooked.relay.db("SELECT payload FROM deliveries WHERE target = 'b' AND payload LIKE ?",
                           f"%{email}%")
    assert sent and all("wp_capabilities" not in payload for (payload,) in sent)
