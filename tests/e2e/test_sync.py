"""End to end on two real WordPress sites: what a change on one site does to the other.

Every scenario changes users through WordPress's own functions on one site and asserts on the
other site's database.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.world import World, user, wait_until

pytestmark = pytest.mark.wordpress


def unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}{tag}", f"{prefix}{tag}@example.test"


def create(site: Site, login: str, email: str, password: str = "first-Pass-1",  # noqa: S107
           role: str = "subscriber", **fields: str) -> int:
    data = {"user_login": login, "user_email": email, "user_pass": password, "role": role,
            **fields}
    return int(site.php_json(f"echo json_encode(wp_insert_user({_php(data)}));"))


def _php(value: Any) -> str:
    """A PHP expression for a JSON-able value (a single-quoted literal: no interpolation)."""
    text = json.dumps(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"json_decode('{text}', true)"


def can_log_in(site: Site, login: str, password: str) -> bool:
    return bool(site.php_json(f"echo json_encode(!is_wp_error(wp_authenticate("
                              f"{json.dumps(login)}, {json.dumps(password)})));"))


def arrives(site: Site, email: str, check: Any = lambda u: u is not None,
            what: str = "the change", traffic: Site | None = None,
            timeout: float = 30) -> dict[str, Any]:
    """Wait for the user on ``site`` to pass ``check``; meanwhile ``traffic`` gets visitors."""
    def arrived() -> Any:
        if traffic is not None:
            visit(traffic)
        return (u := user(site, email)) is not None and check(u) and u
    return wait_until(f"{what} for {email} reaches site {site.name}",  # type: ignore[no-any-return]
                      arrived, timeout=timeout, every=0.5)


def visit(site: Site) -> None:
    """A visitor's page view: on a live site, what gives WordPress the chance to do its chores."""
    with urllib.request.urlopen(site.url + "/", timeout=30) as page:
        page.read()


@pytest.mark.parametrize(("direction", "source", "target"), [
    ("push", "a", "b"), ("pull", "b", "a"), ("bidirectional", "a", "b"),
    ("bidirectional", "b", "a")])
def test_every_action_reaches_the_other_site(world: World, direction: str, source: str,
                                             target: str) -> None:
    world.link(direction)
    src, dst = getattr(world, source), getattr(world, target)
    login, email = unique("every")

    uid = create(src, login, email, first_name="Ada")
    there = arrives(dst, email, lambda u: u["first_name"] == "Ada", "create")
    assert (login, ["subscriber"]) == (there["login"], there["roles"])

    src.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Grace', 'last_name' => 'H']);")
    arrives(dst, email, lambda u: (u["first_name"], u["last_name"]) == ("Grace", "H"), "edit")

    src.php(f"wp_set_password('second-Pass-2', {uid});")
    wait_until("the new password works on the other site",
               lambda: can_log_in(dst, login, "second-Pass-2"))
    assert not can_log_in(dst, login, "first-Pass-1")

    # An author: an editor holds unfiltered_html, so no delivery may give that role.
    src.php(f"(new WP_User({uid}))->set_role('author');")
    arrives(dst, email, lambda u: u["roles"] == ["author"], "roles")

    src.php(f"update_user_meta({uid}, 'favourite_colour', 'green');")
    arrives(dst, email, lambda u: u["meta"] == "green", "metadata")

    src.php(f"require_once ABSPATH . 'wp-admin/includes/user.php'; wp_delete_user({uid});")
    wait_until(f"the delete reaches site {target}", lambda: user(dst, email) is None)


def test_an_action_that_is_not_enabled_does_not_arrive(world: World) -> None:
    world.link("push", outgoing=["create", "edit", "roles"])
    login, email = unique("limited")
    uid = create(world.a, login, email)
    arrives(world.b, email)

    world.a.php(f"update_user_meta({uid}, 'favourite_colour', 'red');"
                f"require_once ABSPATH . 'wp-admin/includes/user.php'; wp_delete_user({uid});")
    world.quiet()

    kept = user(world.b, email)
    assert kept is not None and kept["meta"] == ""


def test_a_change_on_a_bidirectional_link_does_not_come_back(world: World) -> None:
    world.link("bidirectional")
    login, email = unique("echo")
    before = world.relay.db("SELECT count(*) FROM deliveries WHERE target = 'a'")

    uid = create(world.a, login, email, first_name="Echo")
    arrives(world.b, email, lambda u: u["first_name"] == "Echo")
    world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Once']);")
    arrives(world.b, email, lambda u: u["first_name"] == "Once")
    world.quiet()

    assert before == world.relay.db("SELECT count(*) FROM deliveries WHERE target = 'a'")


def test_changes_made_while_the_relay_is_down_all_arrive_in_order(world: World) -> None:
    world.link("push")
    # The link's first start begins its initial sync: let it finish first, or it reads the
    # user made below (already at v5) when the relay returns and queues that copy ahead of
    # the outbox's v0..v5 (site b still ends on v5: the older ones are stale there).
    wait_until("the link's initial sync completes", lambda: json.loads(world.admin(
        "links", "progress", "a-b", "--json"))["state"] == "completed", timeout=120)
    login, email = unique("offline")
    world.relay.stop()
    try:
        uid = create(world.a, login, email, first_name="v0")
        for n in range(1, 6):
            world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'v{n}']);")
        world.a.php(f"(new WP_User({uid}))->set_role('author');")
    finally:
        world.relay.start()

    # The plugin retries its outbox with backoff, on later requests: give site a visitors.
    arrives(world.b, email, lambda u: (u["first_name"], u["roles"]) == ("v5", ["author"]),
            traffic=world.a, timeout=90)
    world.quiet()
    sent = [json.loads(p)["user"].get("first_name") for (p,) in world.relay.db(
        "SELECT payload FROM deliveries WHERE target = 'b' AND payload LIKE ? ORDER BY id",
        f"%{email}%")]
    named = [n for n in sent if n]
    assert named == sorted(named), named


def test_changes_made_while_the_partner_is_down_all_arrive(world: World) -> None:
    world.link("push")
    login, email = unique("partnerdown")
    world.b.stop()
    try:
        uid = create(world.a, login, email, first_name="Down")
        world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Back']);")
        wait_until("the relay has tried site b", lambda: world.relay.db(
            "SELECT count(*) FROM deliveries WHERE target = 'b' AND attempts > 0 "
            "AND state = 'ready'") != [(0,)])
    finally:
        world.b.start()

    arrives(world.b, email, lambda u: u["first_name"] == "Back")


def test_an_email_change_updates_the_same_user(world: World) -> None:
    world.link("push")
    login, email = unique("mail")
    uid = create(world.a, login, email)
    first = arrives(world.b, email)
    new_email = f"new-{email}"

    world.a.php(f"wp_update_user(['ID' => {uid}, 'user_email' => {json.dumps(new_email)}]);")

    moved = arrives(world.b, new_email)
    assert (first["id"], None) == (moved["id"], user(world.b, email))


def test_a_bulk_role_change_of_twenty_users_reaches_all_twenty(world: World) -> None:
    world.link("push")
    tag = uuid.uuid4().hex[:6]
    emails = [f"bulk{tag}{n}@example.test" for n in range(20)]
    ids = [create(world.a, f"bulk{tag}{n}", email) for n, email in enumerate(emails)]
    for email in emails:
        arrives(world.b, email)

    # One request changes all twenty, as the users screen's "Change role to" does.
    world.a.php(f"foreach ({json.dumps(ids)} as $id) {{ (new WP_User($id))->set_role('author'); }}")

    for email in emails:
        arrives(world.b, email, lambda u: u["roles"] == ["author"], "bulk role change")


def test_an_edit_followed_at_once_by_a_delete_never_resurrects_the_user(world: World) -> None:
    world.link("push")
    login, email = unique("gone")
    uid = create(world.a, login, email)
    arrives(world.b, email)

    world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Last words']);")
    world.a.php(f"require_once ABSPATH . 'wp-admin/includes/user.php'; wp_delete_user({uid});")

    wait_until("the delete reaches site b", lambda: user(world.b, email) is None)
    world.quiet()
    assert user(world.b, email) is None
