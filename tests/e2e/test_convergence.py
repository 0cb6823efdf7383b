"""End to end on two real WordPress sites: a bidirectional link converges on the newest change.

Changes made on both sites while the relay is down reach the other site when it returns; each
site keeps, per field group, the change with the newer version (docs/adr/0011), so both end on
the same data without any reconciliation.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.e2e.test_sync import create, unique
from tests.e2e.world import World, user, wait_until

pytestmark = pytest.mark.wordpress


def test_concurrent_edits_end_on_the_newest_on_both_sites(world: World) -> None:
    world.link("bidirectional")
    login, email = unique("swap")
    uid_a = create(world.a, login, email, first_name="Before")
    wait_until("the user reaches b", lambda: (u := user(world.b, email)) is not None
               and u["first_name"] == "Before")
    world.quiet()
    uid_b = user(world.b, email)["id"]  # type: ignore[index]

    world.relay.stop()
    world.a.php(f"wp_update_user(['ID' => {uid_a}, 'first_name' => 'FromA']);")
    time.sleep(1.2)  # the scenario: b's change is made 1.2 s after a's
    world.b.php(f"wp_update_user(['ID' => {uid_b}, 'first_name' => 'FromB']);")
    world.relay.start()
    world.quiet()

    assert ("FromB", "FromB") == (user(world.a, email)["first_name"],  # type: ignore[index]
                                  user(world.b, email)["first_name"])  # type: ignore[index]
    # Of this user (the shared lab keeps other tests' dead letters, e.g. a replaced link's).
    assert [] == world.relay.db("SELECT id FROM deliveries WHERE state = 'dead' AND "
                                "payload LIKE ?", f"%{email}%")


def test_concurrent_edits_of_different_fields_both_survive(world: World) -> None:
    world.link("bidirectional")
    login, email = unique("fields")
    uid_a = create(world.a, login, email, first_name="Ada", last_name="Byron")
    wait_until("the user reaches b", lambda: user(world.b, email) is not None)
    world.quiet()
    uid_b = user(world.b, email)["id"]  # type: ignore[index]

    new_email = f"new-{email}"
    world.relay.stop()
    world.b.php(f"wp_update_user(['ID' => {uid_b}, 'user_email' => '{new_email}']);")
    time.sleep(1.2)  # a's edit of another field comes later, carrying a's (older) email
    world.a.php(f"wp_update_user(['ID' => {uid_a}, 'first_name' => 'Augusta']);")
    world.b.php(f"(new WP_User({uid_b}))->set_role('author');")
    world.relay.start()
    world.quiet()

    for site in (world.a, world.b):
        found = user(site, new_email)
        assert found is not None, f"site {site.name} lost the new email"
        assert ("Augusta", ["author"]) == (found["first_name"], found["roles"])


def test_a_replayed_old_dead_letter_does_not_set_the_partner_back(world: World) -> None:
    """A change refused by the partner, replayed after a newer change reached it: what the dead
    letter carries that is older (the name) is skipped, what is not (the role) is applied."""
    world.link("push")
    role = f"e2e_{uuid.uuid4().hex[:6]}"
    world.a.php(f"add_role('{role}', 'Only on a', ['read' => true]);")
    login, email = unique("replayold")
    uid = create(world.a, login, email, first_name="First")
    wait_until("the user reaches b", lambda: user(world.b, email) is not None)

    # One request: a new name and a role b does not have; b refuses the whole event.
    world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Old', 'role' => '{role}']);")
    wait_until("the refused change is dead-lettered", lambda: [
        d for d in json.loads(world.admin("dead", "list", "--json"))["dead_letters"]
        if role in (d["last_error"] or "")])
    world.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'New']);")
    wait_until("the newer name reaches b", lambda: (user(world.b, email) or {}).get(
        "first_name") == "New")

    world.b.php(f"add_role('{role}', 'Now on b too', ['read' => true]);")
    world.admin("dead", "replay", "--target", "b")
    wait_until("the replayed role reaches b", lambda: (user(world.b, email) or {}).get(
        "roles") == [role])
    world.quiet()

    assert "New" == user(world.b, email)["first_name"]  # type: ignore[index]


def test_the_site_clock_never_moves_back(world: World) -> None:
    """A site's clock (the newest version made or applied there) moves past each version in
    one statement that keeps a later reading, whatever order requests write it in; a reading
    is milliseconds then a counter, compared as numbers (10 is after 9). (The readings here are
    at most two milliseconds ahead of the site's own: other tests share the site.)"""
    readings = world.b.php_json(
        "$ms = max(UserRelay_Versions::parse(UserRelay_Stored_Versions::clock())[0],"
        " (int) floor(microtime(true) * 1000)) + 1; $seen = [];"
        "foreach ([[$ms, 9], [$ms - 5, 50], [$ms, 10], [$ms, 2], [$ms + 1, 0]] as [$m, $c]) {"
        " UserRelay_Stored_Versions::observe(\"$m.$c@elsewhere\");"
        " $seen[] = UserRelay_Stored_Versions::clock(); }"
        "echo json_encode(array_map(fn ($r) => substr($r, -6), $seen));")

    assert readings[0].endswith(".9@") and readings[1] == readings[0]
    assert readings[2].endswith(".10@") and readings[3] == readings[2]
    assert readings[4].endswith(".0@") and readings[4] != readings[2]
