"""Reconciliation on real WordPress: how long ``userrelay drift`` takes over N identical users.

Creates N users on both sites (one PHP process per site, the plugin's reporting suppressed so
nothing is queued), with the same password hash, links the sites (push, every action, matched
by email), lets the link's initial sync settle (the relay then knows every user on both sites),
then times ``userrelay drift a-b`` and checks it found every user in step.
Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.world import ROOT, World, build_world, wait_until
from tests.e2e.wplab import Site, ensure_packages

ALL = ["create", "edit", "delete", "password", "roles", "metadata"]


def create_users(site: Site, count: int) -> float:
    """``count`` users bench-N on ``site``, unreported; seconds it took."""
    started = time.perf_counter()
    site.php(f"""
        UserRelay_Hooks::suppress();
        wp_suspend_cache_addition(true);
        for ($i = 1; $i <= {count}; $i++) {{
            wp_insert_user(['user_login' => "bench$i", 'user_email' => "bench$i@example.test",
                'user_pass' => 'x', 'first_name' => "Bench $i", 'role' => 'subscriber']);
        }}
    """)
    # wp_insert_user salts each hash: make them one, as a synced pair of sites would have.
    site.db_query("UPDATE wp_users SET user_pass = '$P$Bbenchbenchbenchbenchbenchbench0' "
                  "WHERE user_login LIKE 'bench%'")
    return time.perf_counter() - started


def settle(world: World) -> None:
    """Let the link's initial sync (if this relay has one) finish: then the relay knows every
    user on both sites, as it would in production, and nothing changes during the runs."""
    def backfilled() -> bool:
        try:
            rows = world.relay.db("SELECT count(*), count(completed_at) FROM backfills")
        except sqlite3.OperationalError:
            return True  # no initial sync in this relay
        return bool(rows[0][0]) and rows[0][0] == rows[0][1]
    started = time.perf_counter()
    wait_until("the initial sync completes", backfilled, timeout=1800, every=1)
    world.quiet()
    print(f"initial sync settled in {time.perf_counter() - started:.1f}s")


def drift(world: World, page_size: int) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "relay", "drift", "a-b", "--json",
                           "--page-size", str(page_size), "--config",
                           str(world.relay.config_path)], capture_output=True, text=True,
                          check=True, cwd=ROOT, timeout=3600)
    return time.perf_counter() - started, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = ensure_packages()
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    with build_world(Path(tempfile.mkdtemp(prefix="userrelay-reconcile-bench-"))) as world:
        for site in (world.a, world.b):
            seconds = create_users(site, args.users)
            print(f"site {site.name}: {args.users} users created in {seconds:.1f}s")
        world.link("push", outgoing=ALL, incoming=ALL)
        settle(world)
        times = []
        for _ in range(args.runs):
            seconds, report = drift(world, args.page_size)
            summary = report["summary"]
            assert isinstance(summary, dict)
            times.append(seconds)
            print(f"drift a-b: {seconds:.2f}s for {summary['users']} "
                  f"({summary['in_step']} in step, {summary['missing']} missing, "
                  f"{summary['differs']} differ); {args.users / seconds:,.0f} users/s per site")
            if summary["in_step"] != args.users or summary["differs"] or summary["missing"]:
                entries = report["entries"]
                assert isinstance(entries, list)
                raise SystemExit(f"expected {args.users} users in step: {summary}; "
                                 f"first entries: {entries[:4]}")
        print(f"best of {args.runs}: {min(times):.2f}s for {args.users} users per site, "
              f"page size {args.page_size}")


if __name__ == "__main__":
    main()
