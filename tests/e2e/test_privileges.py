"""Roles by what they can do, on real WordPress: a role named anything ("site_owner") that holds
administrator capabilities is privileged; a delivery may not give it, nor change or delete a
user holding it, and such users are not reported, unless the site opted in.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.world import World, deliver

pytestmark = pytest.mark.wordpress


def event(login: str, email: str, actions: list[str], **user: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    return {"id": tag, "origin": {"site": "a", "event_id": tag}, "actions": actions,
            "occurred_at": time.time(), "match": {"by": "email"},
            "user": {"id": 1, "login": login, "email": email, **user}}


def make_user(site: Site, role: str) -> tuple[int, str, str]:
    tag = uuid.uuid4().hex[:8]
    login, email = f"{role}{tag}", f"{role}{tag}@example.test"
    uid = int(site.php_json(f"echo json_encode(wp_insert_user(['user_login' => '{login}', "
                            f"'user_email' => '{email}', 'user_pass' => 'Pass-{tag}', "
                            f"'role' => '{role}']));"))
    return uid, login, email


def state(site: Site, uid: int) -> dict[str, Any] | None:
    seen: dict[str, Any] | None = site.php_json(f"""$u = get_userdata({uid});
        echo json_encode($u ? ['roles' => array_values($u->roles), 'email' => $u->user_email,
            'pass' => $u->user_pass, 'first_name' => $u->first_name] : null);""")
    return seen


@pytest.fixture
def site_owner(world: World) -> str:
    """A custom role on site b holding every capability of administrator."""
    world.b.php("remove_role('site_owner'); add_role('site_owner', 'Site owner', "
                "get_role('administrator')->capabilities);")
    return "site_owner"


def test_giving_a_role_with_administrator_capabilities_is_refused(world: World,
                                                                  site_owner: str) -> None:
    uid, login, email = make_user(world.b, "subscriber")
    before = state(world.b, uid)

    [result] = deliver(world.b, [event(login, email, ["roles"], roles=[site_owner])])

    assert 422 == result["status"], result
    assert "site_owner" in result["error"] and "manage_options" in result["error"]
    assert before == state(world.b, uid)


def test_creating_a_user_with_a_privileged_role_is_refused(world: World,
                                                           site_owner: str) -> None:
    tag = uuid.uuid4().hex[:8]
    email = f"owner{tag}@example.test"

    [result] = deliver(world.b, [event(f"owner{tag}", email, ["create", "roles"],
                                       roles=["subscriber", site_owner])])

    assert 422 == result["status"], result
    assert [] == world.b.db_query(f"SELECT ID FROM wp_users WHERE user_email = '{email}'")


@pytest.mark.parametrize(("actions", "fields"), [
    (["edit"], {"first_name": "Mallory"}),
    (["password"], {"password_hash": "$P$B" + "a" * 30}),
    (["roles"], {"roles": ["subscriber"]}),
    (["metadata"], {"meta": {"favourite_colour": "red"}}),
    (["delete"], {}),
], ids=["edit", "password", "roles", "metadata", "delete"])
def test_a_user_holding_a_privileged_role_is_not_changed(world: World, site_owner: str,
                                                         actions: list[str],
                                                         fields: dict[str, Any]) -> None:
    uid, login, email = make_user(world.b, site_owner)
    before = state(world.b, uid)

    [result] = deliver(world.b, [event(login, email, actions, **fields)])

    assert 422 == result["status"], result
    assert "manage_options" in result["error"]
    assert before == state(world.b, uid)


def test_privileged_users_are_not_reported(world: World, site_owner: str) -> None:
    uid, _, _ = make_user(world.b, site_owner)

    listed = world.b.php_json(
        f"$p = (new UserRelay_Directory(new UserRelay_Settings()))->page({uid} - 1, 1);"
        "echo json_encode(array_column($p['users'], 'id'));")

    assert [] == listed


def test_a_site_that_opted_in_applies_privileged_roles(world: World, site_owner: str) -> None:
    uid, login, email = make_user(world.b, "subscriber")
    world.b.set_constants({"USERRELAY_SYNC_PRIVILEGED": True})
    try:
        [result] = deliver(world.b, [event(login, email, ["roles"], roles=[site_owner])])
    finally:
        world.b.set_constants({"USERRELAY_SYNC_PRIVILEGED": None})

    assert 200 == result["status"], result
    assert [site_owner] == (state(world.b, uid) or {})["roles"]
