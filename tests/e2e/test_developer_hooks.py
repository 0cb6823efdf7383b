"""The plugin's hooks for developers, on real WordPress: must-use plugins of the test add
filters on site a (outgoing) and site b (incoming), scoped to the logins the test makes (the
session's world is shared). Whatever a filter returns, protected meta, privileges and the
version rule hold."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.test_backfill import completed, start_link
from tests.e2e.test_privileges import event
from tests.e2e.test_sync import arrives, create, unique
from tests.e2e.world import World, deliver, user

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
add_filter('userrelay_outgoing_meta_keys', function ($keys, $user_id) {
    if (0 === strpos(get_userdata($user_id)->user_login, 'hookkeys')) {
        $keys = array_diff($keys, ['secret_note']);
        $keys[] = 'wp_capabilities';  // never sent, whatever a filter says
    }
    return $keys;
}, 10, 2);
"""

INCOMING = r"""<?php
add_filter('userrelay_incoming_event', function ($event) {
    $login = $event['user']['login'];
    if (0 === strpos($login, 'indrop')) {
        return false;
    }
    if (0 === strpos($login, 'inchange')) {
        $event['user']['first_name'] = 'Changed on arrival';
    }
    if (0 === strpos($login, 'ingrab')) {  // all a filter may not do
        $event['actions'][] = 'metadata';
        $event['user']['meta'] = ['favourite_colour' => 'green',
                                  'wp_capabilities' => ['administrator' => true]];
    }
    if (0 === strpos($login, 'inadmin')) {
        $event['actions'][] = 'roles';
        $event['user']['roles'] = ['administrator'];
    }
    if (0 === strpos($login, 'inforge')) {
        $event['versions'] = array_fill_keys(array_keys($event['versions']), '9999999999999.0@a');
    }
    return $event;
});
add_filter('userrelay_match_user', function ($user, $data, $match) {
    if (0 === strpos($data['login'], 'inmatch')) {
        return get_user_by('login', 'local' . substr($data['login'], strlen('inmatch'))) ?: null;
    }
    if (0 === strpos($data['login'], 'inboss')) {
        return get_users(['role' => 'administrator', 'number' => 1])[0];
    }
    return $user;
}, 10, 3);
foreach (['userrelay_event_applied', 'userrelay_event_refused'] as $hook) {
    add_action($hook, function ($event, $result) use ($hook) {
        if (0 === strpos($event['user']['login'], 'inseen')) {
            $seen = get_option('userrelay_test_seen', []);
            $seen[] = [$hook, $result['id'], $result['status']];
            update_option('userrelay_test_seen', $seen, false);
        }
    }, 10, 2);
}
"""


@contextlib.contextmanager
def must_use(site: Site, code: str) -> Iterator[None]:
    folder = site.path / "wp-content" / "mu-plugins"
    folder.mkdir(exist_ok=True)
    hooks = folder / "userrelay-test-hooks.php"
    hooks.write_text(code)
    try:
        yield
    finally:
        hooks.unlink()


@pytest.fixture
def hooked(world: World) -> Iterator[World]:
    with must_use(world.a, OUTGOING):
        world.link("push")
        yield world


@pytest.fixture
def receiving(world: World) -> Iterator[Site]:
    """Site b with the incoming filters and actions; events are delivered to it as the relay
    delivers them."""
    with must_use(world.b, INCOMING):
        yield world.b


def state(site: Site, login: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = site.php_json(f"""
        $u = get_user_by('login', {json.dumps(login)});
        echo json_encode($u ? ['id' => $u->ID, 'email' => $u->user_email,
            'first_name' => $u->first_name, 'roles' => array_values($u->roles),
            'colour' => get_user_meta($u->ID, 'favourite_colour', true),
            'caps' => get_user_meta($u->ID, 'wp_capabilities', true)] : null);""")
    return found


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


def test_only_the_meta_keys_a_filter_chooses_are_sent(hooked: World) -> None:
    login, email = unique("hookkeys")
    uid = create(hooked.a, login, email)
    hooked.a.php(f"update_user_meta({uid}, 'favourite_colour', 'blue');"
                 f"update_user_meta({uid}, 'secret_note', 'hush');")

    there = arrives(hooked.b, email, lambda u: u["meta"] == "blue", "favourite_colour")
    hooked.a.php(f"update_user_meta({uid}, 'secret_note', 'still hush');")
    hooked.a.php(f"update_user_meta({uid}, 'favourite_colour', 'red');")
    arrives(hooked.b, email, lambda u: u["meta"] == "red", "the second favourite_colour")

    hooked.quiet()
    assert "" == hooked.b.php_json(f"echo json_encode(get_user_meta({there['id']}, "
                                   "'secret_note', true));")
    sent = hooked.relay.db("SELECT payload FROM deliveries WHERE target = 'b' AND payload LIKE ?",
                           f"%{email}%")
    assert sent and all("secret_note" not in p and "wp_capabilities" not in p for (p,) in sent)


def test_the_initial_sync_sends_only_the_meta_keys_a_filter_chooses(world: World) -> None:
    login, email = unique("hookkeys")
    # A user from before any link, never reported live: only the initial sync sends them.
    world.a.php(f"""UserRelay_Hooks::suppress();
        $id = wp_insert_user(['user_login' => '{login}', 'user_email' => '{email}',
                              'user_pass' => 'Early-Pass-1']);
        update_user_meta($id, 'favourite_colour', 'blue');
        update_user_meta($id, 'secret_note', 'hush');
        UserRelay_Hooks::resume();""")

    with must_use(world.a, OUTGOING):
        completed(world, start_link(world, "push"))

    there = user(world.b, email)
    assert there is not None and "blue" == there["meta"]
    assert "" == world.b.php_json(f"echo json_encode(get_user_meta({there['id']}, "
                                  "'secret_note', true));")


def test_an_incoming_event_changed_by_a_filter_is_applied_changed(receiving: Site) -> None:
    login, email = unique("inchange")

    [result] = deliver(receiving, [event(login, email, ["create"], first_name="Ada")])

    assert 201 == result["status"], result
    assert "Changed on arrival" == (state(receiving, login) or {})["first_name"]


def test_an_incoming_event_dropped_by_a_filter_is_not_applied_and_taken_once(
        receiving: Site) -> None:
    login, email = unique("indrop")
    dropped = event(login, email, ["create"])

    [first] = deliver(receiving, [dropped])
    [again] = deliver(receiving, [dropped])

    assert (200, True) == (first["status"], first.get("dropped")), first
    assert 208 == again["status"], again
    assert state(receiving, login) is None


def test_an_incoming_filter_cannot_add_a_protected_meta_key(receiving: Site) -> None:
    login, email = unique("ingrab")

    [result] = deliver(receiving, [event(login, email, ["create"])])

    assert 201 == result["status"], result
    assert {"roles": ["subscriber"], "colour": "green"} == {
        k: v for k, v in (state(receiving, login) or {}).items() if k in ("roles", "colour")}
    caps = (state(receiving, login) or {})["caps"]
    assert caps == {"subscriber": True}, caps


def test_an_incoming_filter_cannot_grant_a_privileged_role(receiving: Site) -> None:
    login, email = unique("inadmin")

    [result] = deliver(receiving, [event(login, email, ["create"])])

    assert 422 == result["status"], result
    assert "a delivery may not give a privileged role" in result["error"]
    assert state(receiving, login) is None


def test_an_incoming_filter_cannot_make_an_older_change_newer(receiving: Site) -> None:
    login, email = unique("inforge")
    create(receiving, login, email, first_name="Kept")
    old = "1000000000000.0@a"
    edit = event(login, email, ["edit"], first_name="Older")
    edit["versions"] = {"created": old, "profile": old, "email": old}

    [result] = deliver(receiving, [edit])

    assert (200, True) == (result["status"], result.get("stale")), result
    assert "Kept" == (state(receiving, login) or {})["first_name"]


def test_a_match_filter_pairs_a_delivered_user_with_a_local_one(receiving: Site) -> None:
    tag = uuid.uuid4().hex[:8]
    local_id = create(receiving, f"local{tag}", f"local{tag}@example.test")

    [result] = deliver(receiving, [event(f"inmatch{tag}", f"remote{tag}@example.test", ["edit"],
                                         first_name="Matched")])

    assert (200, local_id) == (result["status"], result.get("user_id")), result
    assert {"id": local_id, "email": f"remote{tag}@example.test", "first_name": "Matched"} == {
        k: v for k, v in (state(receiving, f"local{tag}") or {}).items()
        if k in ("id", "email", "first_name")}


def test_a_match_filter_cannot_hand_over_a_privileged_user(receiving: Site) -> None:
    login, email = unique("inboss")
    admins_before = receiving.php_json("echo json_encode(array_map(function ($u) { return "
                                       "[$u->user_email, $u->first_name]; }, "
                                       "get_users(['role' => 'administrator'])));")

    [result] = deliver(receiving, [event(login, email, ["edit"], first_name="Taken over")])

    assert 422 == result["status"], result
    assert "privileged users are not changed by deliveries" in result["error"]
    assert admins_before == receiving.php_json(
        "echo json_encode(array_map(function ($u) { return [$u->user_email, $u->first_name]; },"
        " get_users(['role' => 'administrator'])));")


def test_actions_run_after_an_event_is_applied_and_after_it_is_refused(receiving: Site) -> None:
    receiving.php("delete_option('userrelay_test_seen');")
    good = event(*unique("inseen"), ["create"])
    bad = event(*unique("inseen"), ["create", "roles"], roles=["no_such_role"])

    results = deliver(receiving, [good, bad])

    assert [201, 422] == [r["status"] for r in results], results
    assert [["userrelay_event_applied", good["id"], 201],
            ["userrelay_event_refused", bad["id"], 422]] == receiving.php_json(
        "echo json_encode(get_option('userrelay_test_seen'));")
