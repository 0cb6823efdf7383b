"""Sync status where the site admin looks, through wp-admin's own request handling (a signed-in
client, real nonces read from the pages): "Send to partner sites now" on Users → All Users, as a
bulk action and a row action, and the UserRelay panel of a user's edit screen.
"""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest

from tests.e2e.test_user_filters import start_link
from tests.e2e.world import World, user, wait_until
from tests.e2e.wpadmin import Admin, make_users, notice, recorded_events

pytestmark = pytest.mark.wordpress


def people(prefix: str, n: int, role: str = "subscriber") -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    return [{"user_login": f"{prefix}{tag}{i}", "user_email": f"{prefix}{tag}{i}@example.test",
             "user_pass": "first-Pass-1", "role": role, "first_name": f"N{i}"}
            for i in range(n)]


def row_action(admin: Admin, site: Any, user_id: int) -> str | None:
    """The "Send to partner sites now" link under one user of Users → All Users, found by
    searching for their login (the shared lab has more users than one page shows)."""
    login = site.php_json(f"echo json_encode(get_userdata({user_id})->user_login);")
    _, page = admin.get("/wp-admin/users.php", [("s", login)])
    found = re.search(r'href="([^"]*action=userrelay_send_user[^"]*user=' + str(user_id)
                      + r'[^"]*)"', page)
    return None if found is None else html.unescape(found.group(1))


def bulk_send(admin: Admin, ids: list[int], nonce: str | None = None) -> tuple[int, str]:
    """The users list's bulk form, sent as a browser sends it (GET, with the referer field)."""
    return admin.get("/wp-admin/users.php", [
        ("_wpnonce", nonce if nonce is not None else admin.bulk_nonce()),
        ("_wp_http_referer", "/wp-admin/users.php"), ("action", "userrelay_send"),
        *[("users[]", str(i)) for i in ids], ("action2", "-1")])


def panel(admin: Admin, user_id: int) -> dict[str, tuple[str, str]]:
    """The UserRelay panel of a user's edit screen: target -> (state, why)."""
    status, page = admin.get("/wp-admin/user-edit.php", [("user_id", str(user_id))])
    assert 200 == status, page[-2000:]
    assert 'class="userrelay-user-status"' in page, "no UserRelay panel on the edit screen"
    rows = re.findall(r'<tr class="userrelay-target" data-target="([^"]*)" data-state="([^"]*)">'
                      r"(?:<td>.*?</td>){3}<td>(.*?)</td>", page, re.DOTALL)
    return {target: (state, html.unescape(why)) for target, state, why in rows}


# --- the plugin's side: what a request through wp-admin queues --------------------------------

def test_the_bulk_action_queues_each_selected_user_whole_and_never_a_privileged_one(
        world: World) -> None:
    ids = make_users(world.a, people("bulkq", 3))
    admin = Admin(world.a)
    status, page = admin.get("/wp-admin/users.php")
    assert 'value="userrelay_send"' in page  # offered in the bulk actions

    with recorded_events(world.a) as recorded:
        status, page = bulk_send(admin, [*ids, 1])  # 1: the administrator
        events = recorded()

    assert 200 == status
    assert ("3 users queued for the partner sites; they are sent now, and each link's rules "
            "decide where they go. 1 privileged user was not queued: privileged users are "
            "never synced.") == notice(page, "userrelay-sent")
    assert sorted(ids) == sorted(e["user"]["id"] for e in events)
    assert all((["create", "edit", "password", "roles", "metadata"], True, True) == (
        e["actions"], e["whole"], e["resend"]) and e["user"]["password_hash"] for e in events)


def test_the_bulk_action_without_the_bulk_nonce_queues_nothing(world: World) -> None:
    [user_id] = make_users(world.a, people("nonce", 1))
    admin = Admin(world.a)

    status, page = bulk_send(admin, [user_id], nonce="0123456789")

    assert 403 == status
    assert "userrelay-sent" not in page


def test_the_row_action_queues_that_one_user(world: World) -> None:
    [someone, other] = make_users(world.a, people("rowq", 2))
    admin = Admin(world.a)
    row_link = row_action(admin, world.a, someone)
    assert row_link is not None, "no row action under the user"

    with recorded_events(world.a) as recorded:
        status, page = admin.get(row_link.replace(world.a.url, ""))
        events = recorded()

    assert 200 == status and notice(page, "userrelay-sent").startswith("1 user queued")
    assert [(someone, True)] == [(e["user"]["id"], e["resend"]) for e in events]
    assert other not in [e["user"]["id"] for e in events]


def test_someone_who_cannot_edit_users_gets_neither_the_action_nor_its_effect(
        world: World) -> None:
    [author] = make_users(world.a, [{**people("writer", 1, "author")[0],
                                     "user_pass": "Writer-Pass-1"}])
    login = world.a.php_json(f"echo json_encode(get_userdata({author})->user_login);")
    admin = Admin(world.a)
    row_link = row_action(admin, world.a, author)
    assert row_link is not None, "no row action under the author"
    writer = Admin(world.a, login, "Writer-Pass-1")

    status, page = writer.get(row_link.replace(world.a.url, ""))
    edit_status, edit_page = writer.get("/wp-admin/profile.php")

    assert 403 == status and "userrelay-sent" not in page
    assert 200 == edit_status and "userrelay-user-status" not in edit_page


# --- end to end: send now, and the sync panel ---------------------------------------------------

def test_send_now_on_fifty_selected_users_brings_those_fifty_across(world: World) -> None:
    world.relay.restart_with([])  # no link yet: the users exist before it
    made = make_users(world.a, people("fifty", 55))
    chosen, others = made[:50], made[50:]
    world.quiet()
    start_link(world)  # initial_sync false: nothing of them is sent
    world.quiet()
    emails = {i: world.a.php_json(f"echo json_encode(get_userdata({i})->user_email);")
              for i in made}
    assert [] == [i for i in made if user(world.b, emails[i]) is not None]
    admin = Admin(world.a)

    status, page = bulk_send(admin, chosen)

    assert 200 == status and notice(page, "userrelay-sent").startswith("50 users queued")
    wait_until("the fifty reach b", lambda: all(user(world.b, emails[i]) for i in chosen),
               timeout=120, every=1)
    world.quiet()
    assert [] == [i for i in others if user(world.b, emails[i]) is not None]
    arrived = user(world.b, emails[chosen[7]])
    assert arrived is not None and "N7" == arrived["first_name"]


def test_the_sync_panel_shows_delivered_waiting_and_refused_and_nothing_of_another_site(
        world: World) -> None:
    world.a.php("add_role('wizard', 'Wizard', ['read' => true]);")  # site a only
    start_link(world, direction="bidirectional")
    [delivered, waiting, refused] = make_users(world.a, [
        *people("shown", 2), people("wizard", 1, "wizard")[0]])
    [theirs] = make_users(world.b, people("theirs", 1))
    admin = Admin(world.a)
    wait_until("the delivered user's panel says delivered",
               lambda: panel(admin, delivered).get("b", ("",))[0] == "delivered", timeout=60)
    refused_row = wait_until("the wizard's panel says refused",
                             lambda: panel(admin, refused).get("b"), timeout=60)
    their_email = world.b.php_json(f"echo json_encode(get_userdata({theirs})->user_email);")
    theirs_here = wait_until("b's user reaches a", lambda: user(world.a, their_email))

    world.b.stop()
    try:
        world.a.php(f"wp_update_user(['ID' => {waiting}, 'first_name' => 'While b is down']);")
        waiting_row = wait_until("the edited user's panel says waiting",
                                 lambda: panel(admin, waiting).get("b", ("",))[0] == "waiting"
                                 and panel(admin, waiting)["b"], timeout=60)
    finally:
        world.b.start()
    world.quiet()

    assert "refused" == refused_row[0] and "wizard" in refused_row[1]
    assert waiting_row[1]  # says why
    assert {} == panel(admin, theirs_here["id"])  # b's changes are b's, never shown on a


def test_the_sync_panel_says_so_when_the_relay_does_not_answer(world: World) -> None:
    [someone] = make_users(world.a, people("norelay", 1))
    admin = Admin(world.a)
    world.relay.stop()
    try:
        status, page = admin.get("/wp-admin/user-edit.php", [("user_id", str(someone))])
    finally:
        world.relay.start()

    assert 200 == status
    assert 'class="userrelay-user-status-error"' in page
    assert "The relay did not answer" in html.unescape(page)
