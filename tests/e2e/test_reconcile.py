"""End to end: drift made behind the plugin's back (direct SQL) is found and repaired.

``userrelay drift a-b`` reads both real WordPress sites; ``--repair`` queues the fixes, which
the running relay delivers like any other change.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.test_sync import arrives, create, unique
from tests.e2e.world import World, user, wait_until

pytestmark = pytest.mark.wordpress


def drift(world: World, *args: str) -> dict[str, Any]:
    """The drift report of link a-b, as ``userrelay drift a-b --json`` prints it."""
    return json.loads(world.admin("drift", "a-b", "--json", *args))  # type: ignore[no-any-return]


def entry(report: dict[str, Any], email: str) -> dict[str, Any] | None:
    return next((e for e in report["entries"] if e["match"] == email), None)


def test_drift_behind_the_plugins_back_is_found_and_repaired(world: World) -> None:
    world.link("push")
    login, email = unique("drift")
    gone_login, gone_email = unique("gone")
    # An author: an editor holds unfiltered_html, so no delivery may give that role.
    create(world.a, login, email, first_name="Ada", role="author")
    create(world.a, gone_login, gone_email)
    there = arrives(world.b, email, lambda u: u["first_name"] == "Ada", "create")
    arrives(world.b, gone_email)
    world.quiet()

    # As a restored backup or a change made with the plugin off would: no hook sees it.
    world.b.db_query(f"UPDATE wp_usermeta SET meta_value = 'Drifted' WHERE user_id = "
                     f"{there['id']} AND meta_key = 'first_name'; UPDATE wp_usermeta SET "
                     f"meta_value = 'a:1:{{s:10:\"subscriber\";b:1;}}' WHERE user_id = "
                     f"{there['id']} AND meta_key = 'wp_capabilities'")
    gone = user(world.b, gone_email)
    assert gone is not None
    world.b.db_query(f"DELETE FROM wp_usermeta WHERE user_id = {gone['id']}; "
                     f"DELETE FROM wp_users WHERE ID = {gone['id']}")

    report = drift(world)
    changed, missing = entry(report, email), entry(report, gone_email)
    assert changed is not None and missing is not None, report["summary"]
    assert ("differs", ["profile", "roles"], "a", ["edit", "roles"]) == (
        changed["kind"], changed["groups"], changed["source"], changed["repair"])
    assert ("missing", "a", None) == (missing["kind"], missing["source"], missing["users"]["b"])

    repaired = drift(world, "--repair")
    assert repaired["summary"]["enqueued"] >= 2
    arrives(world.b, email, lambda u: (u["first_name"], u["roles"]) == ("Ada", ["author"]),
            "the repair")
    arrives(world.b, gone_email, what="the re-created user")
    world.quiet()
    after = drift(world)
    assert (None, None) == (entry(after, email), entry(after, gone_email))
    assert "last reconciliation:" in world.admin("status")


def test_a_conflict_on_a_bidirectional_link_goes_to_the_latest_change(world: World) -> None:
    world.link("bidirectional")
    login, email = unique("conflict")
    create(world.a, login, email, first_name="Start")
    on_b = arrives(world.b, email, lambda u: u["first_name"] == "Start", "create")
    world.quiet()
    on_a = user(world.a, email)
    assert on_a is not None
    now = time.time()
    # Both sides changed behind the plugin's back; b's change is the later one.
    for site, uid, name, at in ((world.a, on_a["id"], "Older", now - 600),
                                (world.b, on_b["id"], "Newer", now - 60)):
        site.db_query(f"UPDATE wp_usermeta SET meta_value = '{name}' WHERE user_id = {uid} "
                      "AND meta_key = 'first_name'; DELETE FROM wp_usermeta WHERE user_id = "
                      f"{uid} AND meta_key = 'userrelay_modified'; INSERT INTO wp_usermeta "
                      f"(user_id, meta_key, meta_value) VALUES ({uid}, 'userrelay_modified', "
                      f"'{at:.6f}')")

    report = drift(world)
    conflict = entry(report, email)
    assert conflict is not None, report["summary"]
    assert ("conflict", "b", "a", ["profile"]) == (conflict["kind"], conflict["source"],
                                                  conflict["target"], conflict["groups"])
    assert conflict["decided"].startswith("most recent change wins: b changed")

    drift(world, "--repair")
    arrives(world.a, email, lambda u: u["first_name"] == "Newer", "the winning side")
    world.quiet()
    wait_until("the sites agree again", lambda: entry(drift(world), email) is None, timeout=60)
