"""A relay outage on real WordPress: how long after the relay returns the last change made
during the outage reaches the other site.

Site a pushes to site b. The relay is stopped; a user is created on site a, whose outbox then
fails and backs off (10 s, 30 s, 2 min, 10 min, …) while visitors keep coming; after
``--minutes`` the relay starts again. Reported: seconds from the relay's start to the user's
arrival on site b, and when the plugin's own backoff would have sent it.

``python -m bench.outage [--minutes 5]``. Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from tests.e2e.test_outage import outbox_head, visit
from tests.e2e.world import build_world, user, wait_until
from tests.e2e.wplab import ensure_packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    reason = ensure_packages()
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    with build_world(Path(tempfile.mkdtemp(prefix="userrelay-outage-"))) as world:
        world.link("push")
        world.relay.stop()
        email = f"outage{uuid.uuid4().hex[:8]}@example.test"
        world.a.php(f"wp_insert_user(['user_login' => '{email.split('@')[0]}', "
                    f"'user_email' => '{email}', 'user_pass' => 'Outage-Pass-1']);")
        back_at = time.time() + args.minutes * 60
        while time.time() < back_at:  # visitors keep coming: the outbox tries when due
            visit(world.a)
            time.sleep(2)
        head = outbox_head(world.a) or {}
        world.relay.start()
        started = time.time()
        wait_until("the change reaches site b", lambda: user(world.b, email), timeout=900,
                   every=0.1)
        took = time.time() - started
        print(f"relay down {args.minutes:g} min; the outbox had failed {head.get('attempts')} "
              f"times and would try again {head.get('next_attempt_at', 0) - started:.0f} s "
              "after the relay's return")
        print(f"the change reached site b {took:.1f} s after the relay started")


if __name__ == "__main__":
    main()
