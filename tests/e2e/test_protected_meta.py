"""Protected user meta on real WordPress: a delivery never writes capabilities, user levels,
session tokens, application passwords or the plugin's own keys, however the key is spelt (case,
trailing space, accent: MariaDB's collation would take each for the real row), and the plugin
never sends or digests them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from relay.keys import signatures
from relay.keys.crypto import SiteKey
from tests.e2e.lab_site import Site
from tests.e2e.world import World, deliver, send, wait_until

pytestmark = pytest.mark.wordpress

# Each protected key as an attacker would spell it, with a value that would raise privileges.
ADMIN = {"administrator": True}
ATTACKS: list[tuple[str, Any]] = [
    ("WP_CAPABILITIES", ADMIN), ("wp_capabilities ", ADMIN), ("wp_capabilitiés", ADMIN),
    ("Wp_Capabilities", ADMIN), ("wp_2_capabilities", ADMIN),
    ("WP_USER_LEVEL", "10"), ("wp_user_level ", "10"), ("wp_user_levél", "10"),
    ("SESSION_TOKENS", {"x" * 64: {"expiration": 4102444800}}), ("session_tokens ", {}),
    ("séssion_tokens", {}),
    ("_APPLICATION_PASSWORDS", [{"uuid": "u", "password": "$P$Bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]),
    ("_application_passwords ", []), ("_application_passwordś", []),
    ("USERRELAY_MODIFIED", "9999999999"), ("wp_user-settings", "x"),
    ("community-events-location ", {"ip": "127.0.0.1"}),
]


def event(login: str, email: str, actions: list[str], **user: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    return {"id": tag, "origin": {"site": "a", "event_id": tag}, "actions": actions,
            "occurred_at": time.time(), "match": {"by": "email"},
            "user": {"id": 1, "login": login, "email": email, **user}}


def subscriber(site: Site) -> tuple[int, str, str]:
    tag = uuid.uuid4().hex[:8]
    login, email = f"sub{tag}", f"sub{tag}@example.test"
    uid = int(site.php_json(f"echo json_encode(wp_insert_user(['user_login' => '{login}', "
                            f"'user_email' => '{email}', 'user_pass' => 'Pass-{tag}', "
                            "'role' => 'subscriber']));"))
    return uid, login, email


def meta_rows(site: Site, uid: int) -> list[tuple[str | None, str | None]]:
    rows = site.db_query(f"SELECT meta_key, meta_value FROM wp_usermeta WHERE user_id = {uid} "
                         "ORDER BY umeta_id")
    return [(row["meta_key"], row["meta_value"]) for row in rows]


@pytest.mark.parametrize(("key", "value"), ATTACKS, ids=[repr(k) for k, _ in ATTACKS])
def test_protected_key_as_metadata_on_existing_user_is_refused_and_nothing_written(
        world: World, key: str, value: Any) -> None:
    uid, login, email = subscriber(world.b)
    before = meta_rows(world.b, uid)

    [result] = deliver(world.b, [event(login, email, ["metadata"],
                                       meta={"favourite_colour": "red", key: value})])

    assert 422 == result["status"], result
    assert json.dumps(key) in result["error"]
    assert before == meta_rows(world.b, uid)  # not even the harmless key of the same event
    assert ["subscriber"] == world.b.php_json(
        f"echo json_encode(array_values(get_userdata({uid})->roles));")


@pytest.mark.parametrize(("key", "value"), ATTACKS, ids=[repr(k) for k, _ in ATTACKS])
def test_protected_key_in_create_is_refused_and_no_user_made(world: World, key: str,
                                                             value: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    login, email = f"new{tag}", f"new{tag}@example.test"

    [result] = deliver(world.b, [event(login, email, ["create", "roles", "metadata"],
                                       roles=["subscriber"], meta={key: value})])

    assert 422 == result["status"], result
    assert json.dumps(key) in result["error"]
    assert [] == world.b.db_query(f"SELECT ID FROM wp_users WHERE user_email = '{email}'")


def test_protected_key_in_meta_deleted_is_refused(world: World) -> None:
    uid, login, email = subscriber(world.b)
    before = meta_rows(world.b, uid)

    [result] = deliver(world.b, [event(login, email, ["metadata"], meta={},
                                       meta_deleted=["WP_Capabilities"])])

    assert (422, before) == (result["status"], meta_rows(world.b, uid))


def test_syncable_meta_is_still_applied(world: World) -> None:
    uid, login, email = subscriber(world.b)

    [result] = deliver(world.b, [event(login, email, ["metadata"],
                                       meta={"favourite_colour": "teal"})])

    assert 200 == result["status"], result
    assert "teal" == world.b.php_json(
        f"echo json_encode(get_user_meta({uid}, 'favourite_colour', true));")


def test_capabilities_event_sent_to_the_relay_with_a_partner_key_never_reaches_the_user(
        world: World) -> None:
    """End to end: whoever holds site a's key sends the relay an event that would make a
    subscriber on site b an administrator."""
    world.link("push", outgoing=["create", "edit", "roles", "metadata"])
    uid, login, email = subscriber(world.b)
    before = [row for row in meta_rows(world.b, uid) if row[0] != "userrelay_modified"]
    body = json.dumps(signatures.envelope("events", "a", events=[{
        "id": uuid.uuid4().hex, "occurred_at": time.time(), "actions": ["metadata"],
        "user": {"id": 999, "login": login, "email": email,
                 "meta": {"WP_CAPABILITIES": ADMIN, "wp_user_level ": "10"}}}])).encode()
    key = SiteKey(str(world.a.constants["USERRELAY_KEY"]))
    status, answer = send(f"{world.relay.url}/v1/sites/a/events", body,
                          signatures.headers(key, body, signatures.Direction.TO_RELAY))
    assert status < 500, answer  # refused, or taken with the protected keys dropped

    wait_until("the relay has nothing pending", world.relay.settled)
    assert before == [row for row in meta_rows(world.b, uid) if row[0] != "userrelay_modified"]
    assert ["subscriber"] == world.b.php_json(
        f"echo json_encode(array_values(get_userdata({uid})->roles));")


def test_protected_meta_is_never_listed_snapshotted_or_digested(world: World) -> None:
    """A user with every kind of protected meta (a login session, an application password,
    roles, the plugin's bookkeeping): the users page, the snapshots and the digests show only
    syncable keys, even when the relay names protected ones."""
    uid, _, _ = subscriber(world.b)
    seen = world.b.php_json(f"""
        update_user_meta({uid}, 'favourite_colour', 'teal');
        WP_Session_Tokens::get_instance({uid})->create(time() + 3600);
        WP_Application_Passwords::create_new_application_password({uid}, ['name' => 'x']);
        update_user_meta({uid}, 'userrelay_modified', '1.0');
        $settings = new UserRelay_Settings();
        $page = (new UserRelay_Directory($settings))->page({uid} - 1, 1);
        $digests = new UserRelay_Digests($settings);
        $named = $digests->page({uid} - 1, 1, 'meta:session_tokens,wp_capabilities,'
            . 'wp_user_level,_application_passwords,userrelay_modified,WP_CAPABILITIES');
        $none = $digests->page({uid} - 1, 1, 'meta:no_such_key');
        echo json_encode([
            'stored' => array_keys(get_user_meta({uid})),
            'listed' => array_keys((array) $page['users'][0]['meta']),
            'snapshot' => array_keys((array) $digests->snapshots([{uid}])[0]['meta']),
            'named' => $named['users'][0]['digests']->meta,
            'none' => $none['users'][0]['digests']->meta]);""")

    protected = {"wp_capabilities", "wp_user_level", "session_tokens",
                 "_application_passwords", "userrelay_modified"}
    assert protected <= set(seen["stored"])  # they are there to be leaked
    assert "favourite_colour" in seen["listed"]
    assert set() == protected & set(seen["listed"])
    assert set() == protected & set(seen["snapshot"])
    assert seen["none"] == seen["named"]
