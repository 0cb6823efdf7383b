"""End to end on two real WordPress sites: a link's initial sync copies the users a site had
before the link started, in each direction; survives a relay stopped mid-way without sending
anybody twice; and never overwrites a change made on the target after the snapshot was taken.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from tests.e2e.lab_site import Site
from tests.e2e.test_sync import can_log_in, create
from tests.e2e.world import ALL, World, user, wait_until

pytestmark = pytest.mark.wordpress


def start_link(world: World, direction: str, **backfill: Any) -> str:
    """A new link between a and b (so its first start, and a sync), tested and started."""
    link = f"sync-{uuid.uuid4().hex[:6]}"
    relay = world.relay
    relay.stop()
    relay.configure([{"id": link, "site": "a", "remote": "b", "direction": direction,
                      "outgoing": ALL, "incoming": ALL}])
    document = yaml.safe_load(relay.config_path.read_text())
    document["backfill"] = backfill
    relay.config_path.write_text(yaml.safe_dump(document))
    relay.start()
    for site in ("a", "b"):
        world.admin("sites", "test", site)
    world.admin("links", "start", link)
    return link


def progress(world: World, link: str) -> dict[str, Any]:
    found = json.loads(world.admin("links", "progress", link, "--json"))
    assert found is not None
    return found  # type: ignore[no-any-return]


def completed(world: World, link: str, timeout: float = 120) -> dict[str, Any]:
    wait_until(f"the initial sync of {link} completes",
               lambda: progress(world, link)["state"] == "completed", timeout=timeout, every=0.3)
    world.quiet()
    return progress(world, link)


def make_users(site: Site, prefix: str, count: int, **fields: str) -> list[str]:
    """``count`` users on ``site`` (a password each, meta too); their emails."""
    emails = [f"{prefix}{i}@example.test" for i in range(count)]
    site.php(f"""foreach ({json.dumps(emails)} as $i => $email) {{
        $id = wp_insert_user(['user_login' => strtok($email, '@'), 'user_email' => $email,
            'user_pass' => "pw-$i-Secret", 'role' => 'author',
            'first_name' => {json.dumps(fields.get('first_name', 'Early'))}]);
        update_user_meta($id, 'favourite_colour', 'teal');
    }}""")
    return emails


@pytest.mark.parametrize(("direction", "source", "target"), [("push", "a", "b"),
                                                            ("pull", "b", "a")])
def test_users_that_existed_before_the_link_arrive_with_password_role_and_meta(
        world: World, direction: str, source: str, target: str) -> None:
    src, dst = getattr(world, source), getattr(world, target)
    prefix = f"old{uuid.uuid4().hex[:6]}"
    emails = make_users(src, prefix, 3)

    link = start_link(world, direction)
    done = completed(world, link)

    for email in emails:
        there = user(dst, email)
        assert there is not None, f"{email} did not reach site {target}"
        assert (["author"], "teal", "Early") == (there["roles"], there["meta"],
                                                 there["first_name"])
    assert can_log_in(dst, f"{prefix}0", "pw-0-Secret")
    assert done["total"] is not None and done["done"] == done["total"] >= 3


def test_a_sync_stopped_midway_resumes_and_sends_nobody_twice(world: World) -> None:
    prefix = f"resume{uuid.uuid4().hex[:6]}"
    emails = make_users(world.a, prefix, 40)

    link = start_link(world, "push", page_size=5, window=1)
    wait_until("the sync is under way", lambda: progress(world, link)["sources"]["a"]["after"]
               > 0, every=0.05)
    world.relay.stop()
    stopped_at = progress(world, link)["sources"]["a"]["after"]
    world.relay.start()
    completed(world, link)

    assert all(user(world.b, email) is not None for email in emails)
    assert [] == world.relay.db("SELECT event_id FROM deliveries WHERE event_id LIKE ? "
                                "GROUP BY event_id HAVING count(*) > 1", f"backfill-{link}-%")
    counts = world.b.php_json(f"""global $wpdb; echo json_encode((int) $wpdb->get_var(
        "SELECT COUNT(*) FROM {{$wpdb->users}} WHERE user_email LIKE '{prefix}%'"));""")
    assert 40 == counts
    assert 0 < stopped_at  # it really was stopped mid-way, then carried on


def test_a_change_made_on_the_target_during_the_sync_is_not_overwritten(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    older, newer = f"stale{tag}@example.test", f"fresh{tag}@example.test"
    # Both on both sites. "older": changed on a last, so a's copy wins; "newer": b's wins.
    for email in (older, newer):
        create(world.b, email.split("@")[0], email, first_name="B-first")
    for email in (older, newer):
        create(world.a, email.split("@")[0], email, first_name="From-A")
    world.admin("sites", "test", "b")
    world.b.stop()  # the sync reads a, but cannot deliver to b yet
    try:
        link = start_link_while_b_is_down(world)
        wait_until("the sync has read site a",
                   lambda: progress(world, link)["sources"]["a"]["after"] > 0)
        world.b.php(f"wp_update_user(['ID' => get_user_by('email', '{newer}')->ID, "
                    "'first_name' => 'Changed-On-B']);")
    finally:
        world.b.start()
    completed(world, link)

    assert "From-A" == user_field(world.b, older)
    assert "Changed-On-B" == user_field(world.b, newer)


def start_link_while_b_is_down(world: World) -> str:
    """As ``start_link``, but site b's connection test is the one it passed before."""
    link = f"sync-{uuid.uuid4().hex[:6]}"
    relay = world.relay
    relay.stop()
    relay.configure([{"id": link, "site": "a", "remote": "b", "direction": "push",
                      "outgoing": ALL, "incoming": ALL}])
    relay.start()
    world.admin("sites", "test", "a")
    world.admin("links", "start", link)  # b passed its test just before, same URL and key
    return link


def user_field(site: Site, email: str) -> str:
    found = user(site, email)
    assert found is not None
    return str(found["first_name"])
