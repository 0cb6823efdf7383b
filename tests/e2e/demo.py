"""``make demo``: two real WordPress sites on loopback with the relay between them.

Brings up sites a and b (the plugin active, keys pasted), links them bidirectionally with the
recommended actions plus password, prints both wp-admin addresses and logins, the relay's web
console and its sign-in token, and keeps running
until Ctrl-C, then stops everything it started.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import threading
from pathlib import Path

from tests.e2e.lab_packages import ensure_packages
from tests.e2e.world import build_world


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="var/demo", help="where the sites and the relay live")
    parser.add_argument("--ports", default="8081,8082", help="ports of sites a and b")
    args = parser.parse_args()
    reason = ensure_packages()
    if reason:
        print(f"cannot run WordPress here: {reason}")
        return 1
    port_a, port_b = (int(p) for p in args.ports.split(","))
    base = Path(args.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with build_world(base, (port_a, port_b)) as world:
        token = secrets.token_hex(32)
        console = world.relay.enable_admin(token) + "/console/"  # from the restart below on
        world.link("bidirectional", outgoing=["create", "edit", "roles", "password"],
                   incoming=["create", "edit", "roles", "password"])
        print("UserRelay demo: two WordPress sites, linked both ways.\n")
        for site in (world.a, world.b):
            print(f"  site {site.name}: {site.url}/wp-admin/   "
                  f"login {site.admin_login} / {site.admin_password}")
        print(f"\n  relay: {world.relay.url}  (log: {world.relay.log_path})")
        print(f"  console: {console}  sign in with the admin token {token}")
        print("\nCreate or edit a user on one site (Users > Add New) and reload the users list "
              "of the other.\nCtrl-C stops everything.", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
