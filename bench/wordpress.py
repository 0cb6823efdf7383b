"""The plugin on real WordPress: what it adds to a user save, and how fast site B applies users.

1. Overhead: the median and p95 of a user-saving request (the core REST API creating a user,
   authenticated with an application password) with the plugin active and inactive, in
   alternating rounds on the same two sites.
2. Apply rate: 1,000 users created on site A while site B is down; B comes back and the relay
   delivers them; users/s applied on B, next to ``wp_insert_user()``'s in-process rate on B
   measured in the same run.
Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.e2e.world import World, build_world, wait_until
from tests.e2e.wplab import Site, ensure_packages

PLUGIN_FILE = "userrelay/userrelay.php"


def app_password(site: Site) -> str:
    secret = site.php_json(
        "$u = get_user_by('login', 'admin');"
        "[$pass] = WP_Application_Passwords::create_new_application_password("
        "$u->ID, ['name' => 'bench-' . wp_generate_password(6, false)]);"
        "echo json_encode($pass);")
    return base64.b64encode(f"admin:{secret}".encode()).decode()


def save_times(site: Site, auth: str, count: int, tag: str) -> list[float]:
    """Milliseconds of ``count`` user-creating REST requests."""
    times = []
    for n in range(count):
        body = json.dumps({"username": f"{tag}{n}", "email": f"{tag}{n}@example.test",
                           "password": "bench-Pass-1", "roles": ["subscriber"]}).encode()
        request = urllib.request.Request(f"{site.url}/wp-json/wp/v2/users", data=body,
                                         method="POST", headers={
                                             "Authorization": f"Basic {auth}",
                                             "Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as resp:
            resp.read()
        times.append((time.perf_counter() - start) * 1000)
    return times


def set_plugin(site: Site, active: bool) -> None:
    call = "activate_plugin" if active else "deactivate_plugins"
    site.php(f"require_once ABSPATH . 'wp-admin/includes/plugin.php'; {call}('{PLUGIN_FILE}');")


def overhead(world: World, saves: int, rounds: int) -> None:
    world.link("push")
    auth = app_password(world.a)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for active in (False, True) if r % 2 else (True, False):
            set_plugin(world.a, active)
            save_times(world.a, auth, 3, f"warm{r}{int(active)}x")  # warm the opcode cache
            timings[active] += save_times(world.a, auth, saves, f"save{r}{int(active)}x")
    set_plugin(world.a, True)
    for active in (False, True):
        t = sorted(timings[active])
        p95 = t[int(len(t) * 0.95) - 1]
        print(f"user save, plugin {'active  ' if active else 'inactive'}: median "
              f"{statistics.median(t):6.1f} ms   p95 {p95:6.1f} ms   ({len(t)} saves)")
    added = statistics.median(timings[True]) - statistics.median(timings[False])
    print(f"added by the plugin (median): {added:+.1f} ms")


def apply_rate(world: World, users: int) -> None:
    world.link("push", outgoing=["create", "edit", "roles", "password"])
    baseline = world.b.wp_insert_user_rate(users)
    world.b.stop()
    start_count = int(world.b.php_json("echo json_encode(count_users()['total_users']);"))
    world.a.php(f"for ($i = 0; $i < {users}; $i++) {{ wp_insert_user(['user_login' => "
                f"'rate' . $i, 'user_email' => 'rate' . $i . '@example.test', "
                f"'user_pass' => 'rate-Pass-' . $i, 'role' => 'subscriber']); }}")
    world.quiet_outboxes()
    world.b.start()

    def count() -> int:
        return int(world.b.php_json("echo json_encode(count_users()['total_users']);")) \
            - start_count
    wait_until("site b applies its first user", lambda: count() > 0, timeout=60, every=0.05)
    first_at, first = time.monotonic(), count()
    wait_until(f"site b has all {users} users", lambda: count() >= users, timeout=600,
               every=0.2)
    rate = (users - first) / (time.monotonic() - first_at)
    print(f"wp_insert_user() in one PHP process on site b: {baseline:7.1f} users/s")
    print(f"applied on site b through the relay          : {rate:7.1f} users/s   "
          f"({rate / baseline:.2f} of it; target >= 0.80)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--saves", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    reason = ensure_packages()
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    with build_world(Path(tempfile.mkdtemp(prefix="userrelay-wp-bench-"))) as world:
        overhead(world, args.saves, args.rounds)
        apply_rate(world, args.users)


if __name__ == "__main__":
    main()
