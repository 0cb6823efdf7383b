"""What WordPress allows and the protocol once left out, on real WordPress: meta keys holding
several values, users without an email, and login renames."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.test_backfill import completed, start_link
from tests.e2e.test_developer_hooks import state
from tests.e2e.test_privileges import event
from tests.e2e.test_sync import arrives, can_log_in, create, unique
from tests.e2e.world import World, deliver, wait_until

pytestmark = pytest.mark.wordpress


def values(site: Site, email: str, key: str) -> list[Any] | None:
    """Every value of ``key`` of the user with ``email``, in the order WordPress stores them."""
    found: list[Any] | None = site.php_json(f"""
        $u = get_user_by('email', {json.dumps(email)});
        echo json_encode($u ? get_user_meta($u->ID, {json.dumps(key)}, false) : null);""")
    return found


@pytest.fixture
def pushing(world: World) -> World:
    world.link("push")
    return world


def test_a_meta_key_with_several_values_arrives_whole_and_in_order(pushing: World) -> None:
    login, email = unique("several")
    uid = create(pushing.a, login, email)

    pushing.a.php(f"add_user_meta({uid}, 'phone', '+44 20 1234');"
                  f"add_user_meta({uid}, 'phone', '+44 7700 900');"
                  f"add_user_meta({uid}, 'phone', ['kind' => 'fax', 'n' => '0']);")

    wait_until("three phones reach b", lambda: values(pushing.b, email, "phone") == [
        "+44 20 1234", "+44 7700 900", {"kind": "fax", "n": "0"}])


def test_removing_one_of_several_values_leaves_the_others_on_both_sites(pushing: World) -> None:
    login, email = unique("severalrm")
    uid = create(pushing.a, login, email)
    pushing.a.php(f"add_user_meta({uid}, 'phone', 'one'); add_user_meta({uid}, 'phone', 'two');")
    wait_until("two phones reach b", lambda: values(pushing.b, email, "phone") == ["one", "two"])

    pushing.a.php(f"delete_user_meta({uid}, 'phone', 'one');")

    wait_until("one phone left on b", lambda: values(pushing.b, email, "phone") == ["two"])


def test_a_single_value_delivered_replaces_several(world: World) -> None:
    login, email = unique("severalone")
    uid = create(world.b, login, email)
    world.b.php(f"add_user_meta({uid}, 'phone', 'one'); add_user_meta({uid}, 'phone', 'two');")

    [result] = deliver(world.b, [event(login, email, ["metadata"], meta={"phone": "only"})])

    assert 200 == result["status"], result
    assert ["only"] == values(world.b, email, "phone")


def test_a_malformed_several_values_object_is_refused_naming_the_key(world: World) -> None:
    login, email = unique("severalbad")
    create(world.b, login, email)

    [result] = deliver(world.b, [event(login, email, ["metadata"],
                                       meta={"phone": {"userrelay:values": "not a list"}})])

    assert 400 == result["status"], result
    assert "user.meta.phone" in result["error"]
    assert [] == values(world.b, email, "phone")


def test_a_user_without_an_email_is_created_and_edited_by_login(pushing: World) -> None:
    login, _ = unique("noemail")
    uid = create(pushing.a, login, "", first_name="Nomail")

    wait_until("the user without an email reaches b", lambda: (
        (state(pushing.b, login) or {}).get("first_name") == "Nomail"))
    pushing.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Renamed']);")

    wait_until("the edit reaches b", lambda: (
        (state(pushing.b, login) or {}).get("first_name") == "Renamed"))
    assert "" == (state(pushing.b, login) or {})["email"]


def test_a_user_without_an_email_is_matched_by_login_and_keeps_the_email_here(
        pushing: World) -> None:
    login, email = unique("noemailmatch")
    local_id = create(pushing.b, login, email)

    create(pushing.a, login, "", first_name="Matched")

    wait_until("the edit of the matched user reaches b", lambda: (
        (state(pushing.b, login) or {}).get("first_name") == "Matched"))
    assert (local_id, email) == ((state(pushing.b, login) or {})["id"],
                                 (state(pushing.b, login) or {})["email"])


RENAME = """global $wpdb;
$wpdb->update($wpdb->users, ['user_login' => {new}, 'user_nicename' => sanitize_title({new})],
              ['ID' => {uid}]);
clean_user_cache({uid});"""


def named(site: Site, uid: int) -> dict[str, Any] | None:
    found: dict[str, Any] | None = site.php_json(f"""
        $u = get_userdata({uid});
        echo json_encode($u ? ['login' => $u->user_login, 'nicename' => $u->user_nicename]
                            : null);""")
    return found


def test_a_login_rename_is_applied_on_the_other_site(pushing: World) -> None:
    login, email = unique("renamed")
    uid = create(pushing.a, login, email, password="Rename-Pass-1")
    there = arrives(pushing.b, email)

    # As rename tools do it (WordPress has no API to rename a user):
    pushing.a.php(RENAME.format(new=json.dumps(f"new{login}"), uid=uid))

    arrives(pushing.b, email, lambda u: u["login"] == f"new{login}", "the rename")
    assert {"login": f"new{login}", "nicename": f"new{login}"} == named(pushing.b, there["id"])
    assert can_log_in(pushing.b, f"new{login}", "Rename-Pass-1")
    assert not can_log_in(pushing.b, login, "Rename-Pass-1")


def test_a_login_rename_is_refused_on_a_link_matching_by_login(world: World) -> None:
    login, email = unique("renamebylogin")
    uid = create(world.b, login, email)
    renamed = event(f"new{login}", email, ["edit"], first_name="Renamed", renamed_from=login)
    renamed["match"] = {"by": "login", "user_id": uid}

    [result] = deliver(world.b, [renamed])

    assert 422 == result["status"], result
    assert (f"login rename of user '{login}' ({uid}) to 'new{login}' refused: this link matches "
            "users by login") in result["error"]
    assert login == (named(world.b, uid) or {})["login"]
    assert "" == (state(world.b, login) or {})["first_name"]  # nothing of the event applied


def test_a_login_rename_to_a_login_taken_here_is_refused_naming_its_holder(world: World) -> None:
    login, email = unique("renametaken")
    uid = create(world.b, login, email)
    taken, taken_email = unique("holder")
    holder = create(world.b, taken, taken_email)

    [result] = deliver(world.b, [event(taken, email, ["edit"], renamed_from=login)])

    assert 422 == result["status"], result
    assert f"that login belongs to user {holder} here" in result["error"]
    assert login == (named(world.b, uid) or {})["login"]


def test_a_user_paired_under_another_login_keeps_its_login(world: World) -> None:
    login, email = unique("pairedlogin")
    uid = create(world.b, login, email)

    [result] = deliver(world.b, [event(f"other{login}", email, ["edit"], first_name="Edited")])

    assert 200 == result["status"], result
    assert login == (named(world.b, uid) or {})["login"]
    assert "Edited" == (state(world.b, login) or {})["first_name"]


def test_the_initial_sync_copies_several_values_and_users_without_an_email(
        world: World) -> None:
    login, email = unique("earlyseveral")
    uid = create(world.a, login, email)
    world.a.php(f"add_user_meta({uid}, 'phone', 'one'); add_user_meta({uid}, 'phone', 'two');")
    bare, _ = unique("earlynoemail")
    create(world.a, bare, "", first_name="Bare")

    completed(world, start_link(world, "push"))

    assert ["one", "two"] == values(world.b, email, "phone")
    assert {"email": "", "first_name": "Bare"} == {
        k: v for k, v in (state(world.b, bare) or {}).items() if k in ("email", "first_name")}
