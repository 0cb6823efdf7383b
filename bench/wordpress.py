"""The plugin on real WordPress, as the site's owner feels it.

1. Cost and speed, under ``php -S`` (4 workers) and under PHP-FPM (4 children) behind nginx
   over HTTPS, each in one run with the plugin active and inactive on site A in alternating
   rounds (the order flips every round):
   - site capacity: 200 user creates (the core REST API, an application password) by 8
     concurrent clients; wall time with the plugin over wall time without it;
   - the added time of a user save: median, p95 and p99 of sequential creates, active minus
     inactive;
   - the worst single request of each round, active against inactive;
   these three with the link paused: the relay takes and keeps the events, so site B and the
   delivery do not take this machine's cores from A's visitors (on separate hosts they would
   not);
   - end to end, the link running: from the start of a create on A until the user's row
     exists on site B (a PHP process on B's database watching ``wp_users``, every 2 ms), p50,
     p95 and p99, for sequential creates and for creates by 8 concurrent clients.
   In ``--profile`` mode a must-use plugin on both sites writes timing spans of every request
   to the PHP error log (booted, REST ready, dispatched, the plugin's shutdown work, the POST to
   the relay), summarised per kind of request.
2. Apply rate (``--users N``, 0 skips it): N users created on site A while site B is down; B
   comes back and the relay delivers them; users/s applied on B, next to
   ``wp_insert_user()``'s in-process rate on B measured in the same run.
Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import re
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.webstack import WEB_PACKAGES, Stack, serve_over_https
from tests.e2e.world import World, build_world, free_port, wait_until
from tests.e2e.wplab import Site, ensure_packages
from tests.tlslab import LocalCA

PLUGIN_FILE = "userrelay/userrelay.php"
CLIENTS = 8


def app_password(site: Site) -> str:
    secret = site.php_json(
        "$u = get_user_by('login', 'admin');"
        "[$pass] = WP_Application_Passwords::create_new_application_password("
        "$u->ID, ['name' => 'bench-' . wp_generate_password(6, false)]);"
        "echo json_encode($pass);")
    return base64.b64encode(f"admin:{secret}".encode()).decode()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Client:
    """Creates users on a site through its REST API; remembers when each create started."""

    def __init__(self, site: Site, ca: LocalCA | None) -> None:
        self.site, self.auth = site, app_password(site)
        self.context = ssl.create_default_context(cafile=str(ca.cert)) if ca else None
        self.started: dict[str, float] = {}  # login -> time.time() at the start of its create

    def create(self, login: str) -> float:
        """Milliseconds of one user-creating request."""
        body = json.dumps({"username": login, "email": f"{login}@example.test",
                           "password": "bench-Pass-1", "roles": ["subscriber"]}).encode()
        request = urllib.request.Request(f"{self.site.url}/wp-json/wp/v2/users", data=body,
                                         method="POST", headers={
                                             "Authorization": f"Basic {self.auth}",
                                             "Content-Type": "application/json"})
        self.started[login] = time.time()
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60, context=self.context) as resp:
            resp.read()
        return (time.perf_counter() - start) * 1000

    def sequential(self, logins: list[str]) -> list[float]:
        return [self.create(login) for login in logins]

    def concurrent(self, logins: list[str]) -> tuple[float, list[float]]:
        """Wall seconds and per-request milliseconds of ``logins`` created by CLIENTS clients."""
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            times = list(pool.map(self.create, logins))
        return time.perf_counter() - start, times


class Arrivals:
    """A PHP process polling site B's wp_users every 2 ms: when each login's row appeared."""

    SCRIPT = r"""
$db = new mysqli(null, 'root', '', $argv[1], 0, $argv[2]);
$last = (int) $db->query('SELECT COALESCE(MAX(ID), 0) FROM wp_users')->fetch_row()[0];
fwrite(STDOUT, "ready\n");
while (true) {
    $rows = $db->query("SELECT ID, user_login FROM wp_users WHERE ID > $last ORDER BY ID");
    $now = microtime(true);
    foreach ($rows->fetch_all() as [$id, $login]) {
        $last = (int) $id;
        fwrite(STDOUT, sprintf("%s %.6f\n", $login, $now));
    }
    usleep(2000);
}
"""

    def __init__(self, site: Site) -> None:
        self.seen: dict[str, float] = {}
        self.process = subprocess.Popen(
            ["php", "-r", self.SCRIPT, site.database, str(site._lab.db_socket)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit("the watcher of site b's users did not start")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            login, _, at = line.strip().partition(" ")
            self.seen[login] = float(at)

    def latencies(self, started: dict[str, float], logins: list[str]) -> list[float]:
        """Milliseconds from each create's start to its row on B (waits for all of them)."""
        wait_until(f"site b has all {len(logins)} users", lambda: all(
            login in self.seen for login in logins), timeout=120, every=0.1)
        return [(self.seen[login] - started[login]) * 1000 for login in logins]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


STEPS = r"""
$prop = function ($object, $name) {
    $property = new ReflectionProperty($object, $name);
    $property->setAccessible(true);
    return $property;
};
$parts = $prop('UserRelay_Plugin', 'parts')->getValue();
[$hooks, $outbox, $settings] = [$parts['hooks'], $parts['outbox'], $parts['settings']];
$steps = ['wp_insert_user' => [], 'snapshot' => [], 'enqueue' => [], 'claim' => [], 'send' => []];
$run = bin2hex(random_bytes(3));
for ($i = 0; $i < COUNT; $i++) {
    $t = microtime(true);
    wp_insert_user(['user_login' => "steps{$run}_$i", 'user_email' => "steps{$run}_$i@example.test",
        'user_pass' => 'steps-Pass-1', 'role' => 'subscriber']);
    $steps['wp_insert_user'][] = microtime(true) - $t; $t = microtime(true);
    $events = (new UserRelay_Snapshot($settings))->build($prop($hooks, 'users')->getValue($hooks),
        $prop($hooks, 'deleted')->getValue($hooks), $prop($hooks, 'origins')->getValue($hooks));
    $steps['snapshot'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->enqueue($events);
    $prop($hooks, 'users')->setValue($hooks, []);
    $steps['enqueue'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->claim_kick();
    $steps['claim'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->flush(UserRelay_Outbox::BACKGROUND_BUDGET);
    $outbox->release_kick();
    $steps['send'][] = microtime(true) - $t;
}
echo json_encode($steps);
"""


def shutdown_steps(site: Site, count: int = 40) -> None:
    """The plugin's own steps at the end of a save, timed one by one in one PHP process on a
    quiet site (no concurrent requests): what a save costs without contention."""
    steps = site.php_json(STEPS.replace("COUNT", str(count)))
    print("  the plugin's steps in one PHP process, no other load (median / p95 ms): " + ", ".join(
        f"{name} {statistics.median(v) * 1000:.2f} / {percentile(v, 95) * 1000:.2f}"
        for name, v in steps.items()))


def relay_legs(world: World, started: dict[str, float]) -> dict[str, tuple[float, float]]:
    """login -> (ms from its create's start until the relay stored it, until B answered)."""
    wait_until("the relay delivers everything", world.relay.settled, timeout=120)
    legs = {}
    for payload, created, updated in world.relay.db(
            "SELECT payload, created_at, updated_at FROM deliveries WHERE target = 'b' "
            "AND state = 'done'"):
        login = json.loads(payload).get("user", {}).get("login")
        if login in started:
            legs[login] = ((created - started[login]) * 1000, (updated - started[login]) * 1000)
    return legs


def set_plugin(site: Site, active: bool) -> None:
    call = "activate_plugin" if active else "deactivate_plugins"
    site.php(f"require_once ABSPATH . 'wp-admin/includes/plugin.php'; {call}('{PLUGIN_FILE}');")


PROFILE_PLUGIN = r"""<?php
// Bench: timing spans of each request, in ms since it started, to the PHP error log.
$GLOBALS['bench_spans'] = array();
function bench_span( $name ) {
	$ms = ( microtime( true ) - $_SERVER['REQUEST_TIME_FLOAT'] ) * 1000;
	$GLOBALS['bench_spans'][ $name ] = round( $ms, 2 );
}
add_action( 'muplugins_loaded', function () { bench_span( 'booted' ); } );
add_action( 'rest_api_init', function () { bench_span( 'rest_init' ); } );
add_filter( 'rest_post_dispatch', function ( $r ) { bench_span( 'dispatched' ); return $r; } );
add_filter( 'pre_http_request', function ( $pre ) { bench_span( 'http_start' ); return $pre; } );
add_action( 'http_api_debug', function () { bench_span( 'http_done' ); } );
add_action( 'shutdown', function () { bench_span( 'shutdown' ); }, 0 );
add_action( 'shutdown', function () { bench_span( 'before_plugin' ); }, 999 );
add_action( 'shutdown', function () {
	bench_span( 'after_plugin' );
	$uri = isset( $_SERVER['REQUEST_URI'] ) ? $_SERVER['REQUEST_URI'] : '';
	$kind = isset( $_POST['userrelay_flush'] ) ? 'kick'
		: ( false !== strpos( $uri, 'wp/v2/users' ) ? 'create'
		: ( false !== strpos( $uri, 'userrelay/v1/events' ) ? 'events' : 'other' ) );
	$kind .= class_exists( 'UserRelay_Plugin', false ) ? '+' : '-';
	error_log( 'BENCHSPAN ' . $kind . ' ' . wp_json_encode( $GLOBALS['bench_spans'] ) );
}, 1001 );
"""


def log_size(site: Site) -> int:
    return site.debug_log.stat().st_size if site.debug_log.exists() else 0


def profile_summary(site: Site, ranges: list[tuple[int, int]]) -> None:
    """Median of each span, per kind of request, from the PHP error log's byte ``ranges``."""
    spans: dict[str, dict[str, list[float]]] = {}
    text: list[str] = []
    with site.debug_log.open("rb") as log:
        for start, end in ranges:
            log.seek(start)
            text.append(log.read(end - start).decode(errors="replace"))
    for line in "\n".join(text).splitlines():
        if match := re.search(r"BENCHSPAN (\S+) (\{.*\})", line):
            for name, ms in json.loads(match.group(2)).items():
                spans.setdefault(match.group(1), {}).setdefault(name, []).append(ms)
    for kind, named in sorted(spans.items()):
        parts = "  ".join(f"{name} {statistics.median(v):.1f}/{percentile(v, 95):.1f}"
                          for name, v in named.items())
        count = max(len(v) for v in named.values())
        print(f"    profile {kind:7} ({count} requests), ms since start, median/p95: {parts}")


class Figures:
    def __init__(self) -> None:
        self.saves: dict[bool, list[float]] = {True: [], False: []}
        self.walls: dict[bool, list[float]] = {True: [], False: []}
        self.worst: list[tuple[float, float]] = []  # (active, inactive) of one round
        self.e2e_sequential: list[float] = []
        self.e2e_concurrent: list[float] = []
        # Where the end-to-end time goes: (at the relay, delivered to B) ms after the start.
        self.legs_sequential: list[tuple[float, float]] = []
        self.legs_concurrent: list[tuple[float, float]] = []
        self.creates = 0
        self.cost_logs: list[tuple[int, int]] = []  # site a's error log during the cost phases

    def report(self, server: str, p50_goal: float, p99_goal: float) -> None:
        on, off = self.saves[True], self.saves[False]
        ratio = sum(self.walls[False]) / sum(self.walls[True])
        print(f"\n== {server} ==")
        print(f"site capacity, {len(self.walls[True])} rounds of {self.creates} creates by "
              f"{CLIENTS} clients: inactive {statistics.median(self.walls[False]):.2f} s, active "
              f"{statistics.median(self.walls[True]):.2f} s (median round); throughput "
              f"with/without {ratio:.3f} (target >= 0.95); rounds: " + ", ".join(
                  f"{w:.2f}" for w in self.walls[True]) + " vs " + ", ".join(
                  f"{w:.2f}" for w in self.walls[False]))
        for p in (50, 95, 99):
            with_, without = percentile(on, p), percentile(off, p)
            print(f"user save p{p}: inactive {without:6.1f} ms, active {with_:6.1f} ms, "
                  f"added {with_ - without:+.1f} ms  ({len(on)} saves each)")
        print("added time targets: <= 2 ms median, <= 5 ms p95")
        over = max(a - b for a, b in self.worst)
        print("worst request per round (active vs inactive): " + ", ".join(
            f"{a:.0f}/{b:.0f}" for a, b in self.worst) + f" ms; most over: {over:+.0f} ms "
            "(target <= +100)")
        for name, values in (("sequential", self.e2e_sequential),
                             ("under load", self.e2e_concurrent)):
            print(f"end to end ({name}, {len(values)} creates): p50 "
                  f"{percentile(values, 50):.1f}  p95 {percentile(values, 95):.1f}  p99 "
                  f"{percentile(values, 99):.1f} ms (targets p50 <= {p50_goal:.0f}, "
                  f"p99 <= {p99_goal:.0f})")
        for name, legs in (("sequential", self.legs_sequential),
                           ("under load", self.legs_concurrent)):
            if legs:
                relay_at = [a for a, _ in legs]
                done_at = [b - a for a, b in legs]
                print(f"  where it goes ({name}): start -> stored at the relay p50 "
                      f"{percentile(relay_at, 50):.1f} p95 {percentile(relay_at, 95):.1f} ms; "
                      f"stored -> B answered the delivery p50 {percentile(done_at, 50):.1f} "
                      f"p95 {percentile(done_at, 95):.1f} ms")


def measure(world: World, client: Client, rounds: int, saves: int, creates: int) -> Figures:
    """Per round: the cost phase, plugin active and inactive in alternating order, with the
    link paused (the relay takes and keeps the events: site B and the delivery do not share
    this machine's cores with site A's visitors, as they would not on separate hosts); then the
    end-to-end phase, plugin active and the link running."""
    figures = Figures()
    figures.creates = creates
    arrivals = Arrivals(world.b)
    try:
        for r in range(rounds):
            world.admin("links", "pause", "a-b")
            log_from = log_size(world.a)
            for active in (False, True) if r % 2 else (True, False):
                set_plugin(world.a, active)
                tag = f"r{r}{'on' if active else 'off'}{uuid.uuid4().hex[:4]}"
                client.sequential([f"{tag}w{n}" for n in range(3)])  # warm caches
                figures.saves[active] += client.sequential([f"{tag}s{n}" for n in range(saves)])
                wall, times = client.concurrent([f"{tag}c{n}" for n in range(creates)])
                figures.walls[active].append(wall)
                if active:
                    worst_on = max(times)
                else:
                    worst_off = max(times)
            figures.worst.append((worst_on, worst_off))
            figures.cost_logs.append((log_from, log_size(world.a)))
            set_plugin(world.a, True)
            world.admin("links", "start", "a-b")
            world.quiet()
            tag = f"r{r}e2e{uuid.uuid4().hex[:4]}"
            sequential = [f"{tag}s{n}" for n in range(saves)]
            client.sequential(sequential)
            figures.e2e_sequential += arrivals.latencies(client.started, sequential)
            concurrent = [f"{tag}c{n}" for n in range(creates)]
            client.concurrent(concurrent)
            figures.e2e_concurrent += arrivals.latencies(client.started, concurrent)
            legs = relay_legs(world, client.started)
            figures.legs_sequential += [legs[x] for x in sequential if x in legs]
            figures.legs_concurrent += [legs[x] for x in concurrent if x in legs]
    finally:
        arrivals.stop()
        set_plugin(world.a, True)
    return figures


@contextlib.contextmanager
def fpm_sites(world: World, base: Path) -> Iterator[LocalCA]:
    """Both sites moved to php-fpm behind nginx over HTTPS, the relay trusting their CA."""
    ca = LocalCA(base / "ca")
    stacks: list[Stack] = []
    try:
        for site in (world.a, world.b):
            stacks.append(serve_over_https(site, ca, free_port()))
            world.relay.ca_files[site.name] = ca.cert
        yield ca
    finally:
        for stack in stacks:
            stack.stop()


def cost(world: World, ca: LocalCA | None, server: str, args: argparse.Namespace) -> None:
    world.link("push")
    client = Client(world.a, ca)
    since_b = log_size(world.b)
    mus = [site.path / "wp-content" / "mu-plugins" / "bench-spans.php"
           for site in (world.a, world.b)]
    if args.profile:
        for mu in mus:
            mu.parent.mkdir(exist_ok=True)
            mu.write_text(PROFILE_PLUGIN)
    try:
        figures = measure(world, client, args.rounds, args.saves, args.creates)
    finally:
        for mu in mus:
            mu.unlink(missing_ok=True)
    world.quiet()
    figures.report(server, *((40, 150) if server == "php-fpm" else (60, 200)))
    if args.profile:
        print("  timing spans (ms since the request started; create+/- plugin active/inactive, "
              "kick: the loopback flush, events: a delivery; http: the POST to the relay):")
        print("  site a, the cost phases (link paused):")
        profile_summary(world.a, figures.cost_logs)
        print("  site b, its deliveries:")
        profile_summary(world.b, [(since_b, log_size(world.b))])
        shutdown_steps(world.a)


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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["php-s", "php-fpm", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per plugin state")
    parser.add_argument("--saves", type=int, default=40,
                        help="sequential creates per round and state")
    parser.add_argument("--creates", type=int, default=200,
                        help="concurrent creates per round and state")
    parser.add_argument("--profile", action="store_true",
                        help="timing spans of site a's requests from its PHP error log")
    parser.add_argument("--users", type=int, default=1000,
                        help="apply-rate users, under php -S (0: skip)")
    args = parser.parse_args()
    for name, value in (("--rounds", args.rounds), ("--saves", args.saves),
                        ("--creates", args.creates)):
        if value < 1:
            raise SystemExit(f"{name} must be at least 1, not {value}")
    reason = ensure_packages() or (ensure_packages(WEB_PACKAGES)
                                   if args.server != "php-s" else None)
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    for server in (["php-s", "php-fpm"] if args.server == "both" else [args.server]):
        base = Path(tempfile.mkdtemp(prefix="userrelay-wp-bench-"))
        with build_world(base) as world:
            if server == "php-fpm":
                with fpm_sites(world, base) as ca:
                    cost(world, ca, server, args)
            else:
                cost(world, None, server, args)
                if args.users:
                    apply_rate(world, args.users)


if __name__ == "__main__":
    main()
