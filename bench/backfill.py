"""A link's initial sync on real WordPress: users/s backfilled from site A into site B.

Site A gets N users with a password (written straight into its tables, all with one stored
hash, so that making them takes seconds); then a push link (create, edit, password, roles) is
started and the relay reads A's users page by page and site B applies them. Printed: users/s
from ``userrelay links start`` to the sync's completion, next to ``wp_insert_user()``'s in-process
rate on site B measured in the same run (up to 1,000 users), and their ratio (target >= 0.9).
Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from tests.e2e.world import World, build_world, wait_until
from tests.e2e.wplab import ensure_packages

LINK = "bench-sync"


def seed(world: World, users: int) -> None:
    """``users`` subscribers on site A with a real password hash, 500 per query."""
    world.a.php(f"""global $wpdb; $prefix = $wpdb->get_blog_prefix();
        $caps = serialize(['subscriber' => true]);
        $hash = wp_hash_password('sync-Pass'); // one real hash for all: hashing is not measured
        for ($start = 0; $start < {users}; $start += 500) {{
            $rows = []; $meta = [];
            for ($i = $start; $i < min($start + 500, {users}); $i++) {{
                $rows[] = $wpdb->prepare('(%s, %s, %s, %s, %s, %s)', "sync$i", $hash, "sync$i",
                    "sync$i@example.test", gmdate('Y-m-d H:i:s'), "sync$i");
            }}
            $wpdb->query("INSERT INTO {{$wpdb->users}} (user_login, user_pass, user_nicename, "
                . "user_email, user_registered, display_name) VALUES " . implode(',', $rows));
            $first = (int) $wpdb->insert_id;
            for ($id = $first; $id < $first + count($rows); $id++) {{
                $meta[] = $wpdb->prepare('(%d, %s, %s)', $id, $prefix . 'capabilities', $caps);
                $meta[] = $wpdb->prepare('(%d, %s, %s)', $id, $prefix . 'user_level', '0');
            }}
            $wpdb->query("INSERT INTO {{$wpdb->usermeta}} (user_id, meta_key, meta_value) "
                . "VALUES " . implode(',', $meta));
        }}
        wp_cache_flush();""")


def start_link(world: World, page_size: int, window: int) -> None:
    """The relay with the link, both sites tested: ready for ``links start``."""
    relay = world.relay
    relay.stop()
    relay.configure([{"id": LINK, "site": "a", "remote": "b", "direction": "push",
                      "outgoing": ["create", "edit", "password", "roles"]}])
    document = yaml.safe_load(relay.config_path.read_text())
    document["backfill"] = {"page_size": page_size, "window": window}
    relay.config_path.write_text(yaml.safe_dump(document))
    relay.start()
    for site in ("a", "b"):
        world.admin("sites", "test", site)


def progress(world: World) -> dict[str, object]:
    found = json.loads(world.admin("links", "progress", LINK, "--json"))
    assert isinstance(found, dict)
    return found


def completed(world: World) -> bool:
    """Read from the relay's database: a CLI process per look would take CPU from the sites."""
    return [(0,)] == world.relay.db("SELECT count(*) FROM backfills WHERE link = ? AND "
                                    "completed_at IS NULL", LINK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--window", type=int, default=2)
    args = parser.parse_args()
    reason = ensure_packages()
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    with build_world(Path(tempfile.mkdtemp(prefix="userrelay-sync-bench-"))) as world:
        seed(world, args.users)
        baseline = world.b.wp_insert_user_rate(min(args.users, 1000))
        start_link(world, args.page_size, args.window)
        started = time.monotonic()
        world.admin("links", "start", LINK)  # the sync begins
        wait_until("the initial sync completes", lambda: completed(world),
                   timeout=max(600, args.users), every=0.2)
        elapsed = time.monotonic() - started
        applied = int(world.b.php_json(
            "global $wpdb; echo json_encode((int) $wpdb->get_var(\"SELECT COUNT(*) FROM "
            "{$wpdb->users} WHERE user_login LIKE 'sync%'\"));"))
        assert applied == args.users, f"site b has {applied} of the {args.users} users"
        rate = args.users / elapsed
        print(f"users backfilled                              : {args.users}")
        print(f"wp_insert_user() in one PHP process on site b: {baseline:7.1f} users/s")
        print(f"backfilled into site b through the relay     : {rate:7.1f} users/s   "
              f"({rate / baseline:.2f} of it; target >= 0.90)")
        print(f"the relay's own figure for the sync           : {progress(world)['rate']} users/s")
        print(world.admin("links", "progress", LINK).rstrip())


if __name__ == "__main__":
    main()
