"""Which users and which fields a link syncs, on two real WordPress sites: a custom ``customer``
role on both, a link syncing only customers and subscribers, a link whose fields leave out the
description; and what the plugin reports for it (every event's roles, a role change whole, the
site's roles in the ping) and how it honours a delivery's ``keep``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from relay.keys.crypto import SiteKey
from tests.e2e.lab_site import Site
from tests.e2e.world import ALL, World, deliver, post_to_plugin, user, wait_until
from tests.e2e.wpadmin import recorded_events

pytestmark = pytest.mark.wordpress

SYNCED_ROLES = ["customer", "subscriber"]


def unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}{tag}", f"{prefix}{tag}@example.test"


def _php(value: Any) -> str:
    """A PHP expression for a JSON-able value (a single-quoted literal: no interpolation)."""
    text = json.dumps(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"json_decode('{text}', true)"


def create(site: Site, login: str, email: str, role: str, **fields: str) -> int:
    data = {"user_login": login, "user_email": email, "user_pass": "first-Pass-1",
            "role": role, **fields}
    return int(site.php_json(f"echo json_encode(wp_insert_user({_php(data)}));"))


def set_role(site: Site, user_id: int, role: str) -> None:
    site.php(f"(new WP_User({user_id}))->set_role({json.dumps(role)});")


def reported(site: Site, code: str) -> list[dict[str, Any]]:
    """The events ``site``'s plugin stores in its outbox while ``code`` runs."""
    with recorded_events(site) as recorded:
        site.php(code)
        return recorded()


@pytest.fixture(scope="module")
def roles(world: World) -> World:
    """The shop's own role, made on both sites; ``wizard`` on site a only."""
    for site in (world.a, world.b):
        site.php("add_role('customer', 'Customer', ['read' => true]);")
    world.a.php("add_role('wizard', 'Wizard', ['read' => true]);")
    return world


def start_link(world: World, **rules: Any) -> None:
    """Site a's link to b (push, every action) with ``rules`` (roles, fields, initial_sync),
    tested and started as an admin does."""
    world.relay.restart_with([{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                               "outgoing": ALL, "incoming": ALL, "match_by": "email",
                               "initial_sync": False, **rules}])
    for site in ("a", "b"):
        world.admin("sites", "test", site)
    world.admin("links", "start", "a-b")


# --- what the plugin reports ----------------------------------------------------------------

def test_every_reported_event_carries_the_users_roles(roles: World) -> None:
    login, email = unique("roles")
    user_id = create(roles.a, login, email, "author")

    events = reported(roles.a, f"""
        wp_update_user(['ID' => {user_id}, 'first_name' => 'Edited']);
        update_user_meta({user_id}, 'favourite_colour', 'teal');""")
    events += reported(roles.a, f"""require_once ABSPATH . 'wp-admin/includes/user.php';
        wp_delete_user({user_id});""")

    assert [(["edit", "metadata"], ["author"]), (["delete"], ["author"])] == [
        (e["actions"], e["user"]["roles"]) for e in events]
    assert not any(e.get("whole") for e in events)


def test_a_role_change_is_reported_whole(roles: World) -> None:
    login, email = unique("whole")
    user_id = create(roles.a, login, email, "author", first_name="Wanda",
                     description="Writes about tea.")
    roles.a.php(f"update_user_meta({user_id}, 'favourite_colour', 'green');")
    hash_now = roles.a.php_json(f"echo json_encode(get_userdata({user_id})->user_pass);")

    [event] = reported(roles.a, f"(new WP_User({user_id}))->set_role('customer');")

    assert (["roles"], True) == (event["actions"], event["whole"])
    person = event["user"]
    assert (["customer"], "Wanda", "Writes about tea.", hash_now, "green") == (
        person["roles"], person["first_name"], person["description"], person["password_hash"],
        person["meta"]["favourite_colour"])
    assert {"created", "profile", "email", "password", "roles",
            "meta:favourite_colour"} <= set(event["versions"])


def test_the_ping_answers_every_role_of_the_site(roles: World) -> None:
    status, answer = post_to_plugin(roles.b, SiteKey(str(roles.b.constants["USERRELAY_KEY"])),
                                    "ping")

    assert 200 == status
    assert {"slug": "customer", "name": "Customer"} in answer["roles"]
    assert {"administrator", "subscriber", "customer"} <= {r["slug"] for r in answer["roles"]}
    assert "wizard" not in {r["slug"] for r in answer["roles"]}


def test_a_delivery_that_keeps_the_email_leaves_a_held_users_email(roles: World) -> None:
    login, email = unique("keep")
    create(roles.b, login, email, "subscriber", first_name="Before")

    def delivery(n: int, actions: list[str], new_email: str) -> dict[str, Any]:
        return {"id": f"keep-{login}-{n}", "origin": {"site": "a", "event_id": f"{login}-{n}"},
                "actions": actions, "keep": ["email"], "match": {"by": "login"},
                "user": {"id": 900 + n, "login": login, "email": new_email,
                         "first_name": "After"}}

    results = deliver(roles.b, [delivery(1, ["edit"], "changed-" + email)])
    new_login, new_email = unique("keepnew")
    created = deliver(roles.b, [{**delivery(2, ["create"], new_email),
                                 "user": {"id": 902, "login": new_login, "email": new_email}}])

    assert [200, 201] == [results[0]["status"], created[0]["status"]]
    held = user(roles.b, email)
    assert held is not None and "After" == held["first_name"]  # the profile applied, not the email
    assert user(roles.b, "changed-" + email) is None
    assert user(roles.b, new_email) is not None  # a user the delivery creates gets its email


# --- a link syncing customers and subscribers -----------------------------------------------

def test_a_link_syncing_customers_and_subscribers_follows_each_users_roles(roles: World) -> None:
    world = roles
    start_link(world, roles={"outgoing": SYNCED_ROLES})
    customer_login, customer_email = unique("cust")
    author_login, author_email = unique("auth")
    promoted_login, promoted_email = unique("prom")
    demoted_login, demoted_email = unique("demo")
    create(world.a, author_login, author_email, "author")
    promoted = create(world.a, promoted_login, promoted_email, "author", first_name="Pat",
                      description="Promoted later.")
    world.a.php(f"update_user_meta({promoted}, 'favourite_colour', 'amber');")
    demoted = create(world.a, demoted_login, demoted_email, "customer", first_name="Dee")
    create(world.a, customer_login, customer_email, "customer")

    wait_until("the new customers reach b", lambda: user(world.b, customer_email)
               and user(world.b, demoted_email))
    world.quiet()
    assert user(world.b, author_email) is None  # a new author does not arrive
    assert user(world.b, promoted_email) is None

    set_role(world.a, promoted, "customer")
    set_role(world.a, demoted, "author")
    world.a.php(f"wp_update_user(['ID' => {demoted}, 'first_name' => 'Changed after']);")

    arrived = wait_until("the promoted author reaches b whole",
                         lambda: user(world.b, promoted_email))
    world.quiet()
    source = user(world.a, promoted_email)
    assert source is not None
    assert (["customer"], "Pat", "amber", source["pass"]) == (
        arrived["roles"], arrived["first_name"], arrived["meta"], arrived["pass"])
    assert "Promoted later." == world.b.php_json(
        f"echo json_encode(get_user_by('email', {json.dumps(promoted_email)})->description);")
    stayed = user(world.b, demoted_email)  # left the roles: kept on b as it was
    assert stayed is not None and (["customer"], "Dee") == (stayed["roles"], stayed["first_name"])


def test_a_link_without_description_leaves_the_partners_description(roles: World) -> None:
    world = roles
    fields = ["first_name", "last_name", "nickname", "display_name", "url", "locale", "email"]
    start_link(world, fields=fields)
    login, email = unique("desc")
    create(world.b, login, email, "subscriber", first_name="Old",
           description="The branch's own words.")

    create(world.a, login, email, "subscriber", first_name="New",
           description="The shop's words.")

    wait_until("the shop's first name reaches b", lambda: (u := user(world.b, email))
               and "New" == u["first_name"])
    world.quiet()
    assert "The branch's own words." == world.b.php_json(
        f"echo json_encode(get_user_by('email', {json.dumps(email)})->description);")
