"""The plugin on real WordPress, as the site's owner feels it.

One run measures two servers, each on a pair of sites (a and b) of its own WordPress release:
``php -S`` (4 workers) on WordPress 6.1 and PHP-FPM (4 children) behind nginx over HTTPS on
WordPress 6.8, by default (``--php-s-release``, ``--fpm-release``: 6.1, 6.8 or ``system``; the
release that is not the system's comes from the other Debian release's package,
tests/e2e/wpreleases.py). Under FPM the plugin also sends to the relay over HTTPS (nginx with
TLS in front of it, as docs/operations.md deploys it).

1. Cost and speed, plugin active and inactive on site A in alternating rounds (the order flips
   every round):
   - site capacity: 200 user creates (the core REST API, an application password) by 8
     concurrent clients; wall time without the plugin over wall time with it;
   - the added time of a user save: median, p95 and p99 of sequential creates, active minus
     inactive, back to back and 0.2 s apart (``PAUSE``: a save's send has ended);
   - the worst single request of each round, active against inactive;
   - the CPU site A's web server, the database and the relay spend per create
     (bench/wordpress_cpu.py), and with ``--cpu-profile`` site A's CPU per create by call
     stack (bench/wordpress_cpu_profile.py, php-excimer);
   these with the link paused: the relay takes and keeps the events, so site B and the
   delivery do not take this machine's cores from A's visitors (on separate hosts they would
   not);
   - end to end, the link running: from the start of a create on A until the user's row
     exists on site B (a PHP process on B's database watching ``wp_users``, every 2 ms), p50,
     p95 and p99, for sequential creates and for creates by 8 concurrent clients.
   In ``--profile`` mode a must-use plugin on both sites writes timing spans of every request
   to the PHP error log (bench/wordpress_spans.py), summarised per kind of request.
2. Apply rate (``--users N``, 0 skips it): N users created on site A while the link is paused;
   the link starts and the relay delivers them; users/s applied on B, next to
   ``wp_insert_user()``'s in-process rate on B measured in the same run.
The last table puts both servers' figures side by side with their targets.
Needs root (Debian's packages); only loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.wordpress_clients import (
    BEFORE_DIR,
    PAUSE,
    Arrivals,
    Client,
    relay_legs,
    set_plugin,
)
from bench.wordpress_cpu import Meter
from bench.wordpress_cpu_profile import PACKAGES as CPU_PACKAGES
from bench.wordpress_cpu_profile import plugin as cpu_plugin
from bench.wordpress_cpu_profile import summary as cpu_summary
from bench.wordpress_figures import GOALS, Figures, summary
from bench.wordpress_spans import (
    PROFILE_PLUGIN,
    log_size,
    profile_summary,
    shutdown_steps,
)
from tests.e2e.webstack import WEB_PACKAGES, Stack, proxy_over_https, serve_over_https
from tests.e2e.world import World, build_world, free_port, outbox, wait_until
from tests.e2e.wplab import LabError, Site, ensure_packages
from tests.e2e.wpreleases import SUITES, ReleaseError
from tests.tlslab import LocalCA


class Server:
    """One server's pair of sites (a world of its own: lab, MariaDB, relay), measured round by
    round between the other server's rounds."""

    def __init__(self, kind: str, world: World, ca: LocalCA | None, creates: int,
                 before: Path | None, meter: Meter) -> None:
        self.kind, self.world, self.ca, self.meter = kind, world, ca, meter
        self.wordpress = str(world.a.php_json("echo json_encode($GLOBALS['wp_version']);"))
        if before is not None:  # beside the working tree's, activated in its "before" rounds
            (world.a.path / "wp-content" / "plugins" / BEFORE_DIR).symlink_to(before, True)
        self.figures = Figures(creates, ["off", "on", *(["before"] if before else [])])
        self.client: Client | None = None
        self.arrivals: Arrivals | None = None
        self.since_b = 0

    @property
    def label(self) -> str:
        stack = ("php -S, 4 workers, http" if self.kind == "php-s" else
                 "PHP-FPM (4 children) behind nginx, HTTPS; the relay behind nginx, HTTPS")
        return f"WordPress {self.wordpress} under {stack}"

    def start(self, profile: bool, cpu_profile: bool) -> None:
        self.world.link("push")
        self.client = Client(self.world.a, self.ca)
        self.since_b = log_size(self.world.b)
        if profile:
            for mu in self.profile_plugins():
                mu.parent.mkdir(exist_ok=True)
                mu.write_text(PROFILE_PLUGIN)
        if cpu_profile:
            self.cpu_profile.mkdir(exist_ok=True)
            self.cpu_plugin.parent.mkdir(exist_ok=True)
            self.cpu_plugin.write_text(cpu_plugin(self.cpu_profile, BEFORE_DIR))
        self.arrivals = Arrivals(self.world.b)

    @property
    def cpu_profile(self) -> Path:
        """Where site A's CPU profiles go (--cpu-profile)."""
        return self.world.lab.log_dir / "cpu-profile"

    @property
    def cpu_plugin(self) -> Path:
        return self.world.a.path / "wp-content" / "mu-plugins" / "bench-cpu.php"

    def profile_plugins(self) -> list[Path]:
        return [site.path / "wp-content" / "mu-plugins" / "bench-spans.php"
                for site in (self.world.a, self.world.b)]

    def stop(self) -> None:
        if self.arrivals is not None:
            self.arrivals.stop()
            self.arrivals = None
        for mu in [*self.profile_plugins(), self.cpu_plugin]:
            mu.unlink(missing_ok=True)
        self.set_state("on")

    def round(self, r: int, saves: int, creates: int) -> None:
        """The cost phase, each state of the plugin in turn (the order rotates every round),
        with the link paused (the relay takes and keeps the events: site B and the delivery do
        not share this machine's cores with site A's visitors, as they would not on separate
        hosts); then the end-to-end phase for each active state, the link running."""
        world, client, arrivals, figures = self.world, self.client, self.arrivals, self.figures
        assert client is not None and arrivals is not None, "start() first"
        world.admin("links", "pause", "a-b")
        log_from = log_size(world.a)
        worst: dict[str, float] = {}
        states = figures.states[r % len(figures.states):] + figures.states[
            :r % len(figures.states)]
        for state in states:
            self.set_state(state)
            tag = f"r{r}{state}{uuid.uuid4().hex[:4]}"
            client.sequential([f"{tag}w{n}" for n in range(3)])  # warm caches
            before = self.meter.reading()
            figures.saves[state] += client.sequential([f"{tag}s{n}" for n in range(saves)])
            figures.paced[state] += client.sequential([f"{tag}p{n}" for n in range(saves)],
                                                      PAUSE)
            wall, times = client.concurrent([f"{tag}c{n}" for n in range(creates)])
            figures.add_cpu(state, Meter.spent(before, self.meter.reading()),
                            2 * saves + creates)
            figures.walls[state].append(wall)
            worst[state] = max(times)
        figures.worst.append(worst)
        figures.cost_logs.append((log_from, log_size(world.a)))
        for state in [s for s in states if s != "off"]:
            self.set_state(state)
            world.admin("links", "start", "a-b")
            quiet(world)
            tag = f"r{r}e2e{state}{uuid.uuid4().hex[:4]}"
            sequential = [f"{tag}s{n}" for n in range(saves)]
            client.sequential(sequential)
            figures.e2e[state]["sequential"] += arrivals.latencies(client.started, sequential)
            concurrent = [f"{tag}c{n}" for n in range(creates)]
            client.concurrent(concurrent)
            figures.e2e[state]["under load"] += arrivals.latencies(client.started, concurrent)
            legs = relay_legs(world, client)
            figures.legs[state]["sequential"] += [legs[x] for x in sequential if x in legs]
            figures.legs[state]["under load"] += [legs[x] for x in concurrent if x in legs]
            quiet(world)
            world.admin("links", "pause", "a-b")
        world.admin("links", "start", "a-b")
        self.set_state("on")

    def set_state(self, state: str) -> None:
        """Site A's plugin off, on, or on as at --before."""
        set_plugin(self.world.a, state)

    def report(self, profile: bool, cpu_profile: bool) -> None:
        print(f"\n== {self.kind}: {self.label} ==")
        self.figures.report(GOALS[self.kind])
        if profile:
            print("  timing spans (ms since the request started; create+/- plugin "
                  "active/inactive, kick: the loopback flush, events: a delivery; http: the "
                  "POST to the relay):")
            print("  site a, the cost phases (link paused):")
            profile_summary(self.world.a, self.figures.cost_logs)
            print("  site b, its deliveries:")
            profile_summary(self.world.b, [(self.since_b, log_size(self.world.b))])
            shutdown_steps(self.world.a)
        if cpu_profile:
            cpu_summary(self.cpu_profile, self.figures.states)

    def apply_rate(self, users: int) -> None:
        """N users created on A with the link paused; users/s B applies once it starts, beside
        wp_insert_user()'s rate on B in one PHP process."""
        world = self.world
        world.link("push", outgoing=["create", "edit", "roles", "password"])
        baseline = world.b.wp_insert_user_rate(users)
        world.admin("links", "pause", "a-b")
        start_count = int(world.b.php_json("echo json_encode(count_users()['total_users']);"))
        prefix = f"rate{uuid.uuid4().hex[:4]}_"
        world.a.php(f"for ($i = 0; $i < {users}; $i++) {{ wp_insert_user(['user_login' => "
                    f"'{prefix}' . $i, 'user_email' => '{prefix}' . $i . '@example.test', "
                    f"'user_pass' => 'rate-Pass-' . $i, 'role' => 'subscriber']); }}")
        quiet_outboxes(world)
        world.admin("links", "start", "a-b")
        started = time.monotonic()

        def count() -> int:
            return int(world.b.php_json("echo json_encode(count_users()['total_users']);")) \
                - start_count
        wait_until(f"site b has all {users} users", lambda: count() >= users, timeout=600,
                   every=0.2)
        rate = users / (time.monotonic() - started)  # from the link's start: the whole drain
        self.figures.apply = (baseline, rate)
        print(f"\n== {self.kind}: apply rate, {self.label} ==")
        print(f"wp_insert_user() in one PHP process on site b: {baseline:7.1f} users/s")
        print(f"applied on site b through the relay          : {rate:7.1f} users/s   "
              f"({rate / baseline:.2f} of it; target >= 0.80)")


def quiet_outboxes(world: World) -> None:
    """Both outboxes empty (asked in a PHP process: under FPM, php -S is not running)."""
    for site in (world.a, world.b):
        wait_until(f"site {site.name}'s outbox empties", functools.partial(empty, site),
                   timeout=120)


def empty(site: Site) -> bool:
    return outbox(site) == 0


def quiet(world: World) -> None:
    quiet_outboxes(world)
    wait_until("the relay delivers everything", world.relay.settled, timeout=120)


@contextlib.contextmanager
def fpm_sites(world: World, base: Path) -> Iterator[tuple[LocalCA, dict[str, Stack]]]:
    """Both sites moved to php-fpm behind nginx over HTTPS, the relay trusting their CA, and
    the plugins sending to the relay over HTTPS through nginx in front of it; yields the CA and
    the stacks by name ("relay", "a", "b")."""
    ca = LocalCA(base / "ca")
    stacks: list[Stack] = []
    try:
        relay_port = free_port()
        stacks.append(proxy_over_https(base, world.lab.log_dir, ca, relay_port,
                                       world.relay.url))
        for site in (world.a, world.b):
            site.set_constants({"USERRELAY_URL": f"https://localhost:{relay_port}"})
            stacks.append(serve_over_https(site, ca, free_port()))
            world.relay.ca_files[site.name] = ca.cert
        yield ca, {"relay": stacks[0], "a": stacks[1], "b": stacks[2]}
    finally:
        for stack in reversed(stacks):
            stack.stop()


def sessions(stack: Stack) -> set[int]:
    """The sessions of a stack's processes (each started in one of its own)."""
    return {p.pid for p in stack.processes}


def database(world: World) -> set[int]:
    return {world.lab.mariadb.pid or 0}


def relay(world: World) -> set[int]:
    return {world.relay.process.pid} if world.relay.process is not None else set()


@contextlib.contextmanager
def server(kind: str, release: str | None, creates: int, plugin: Path | None,
           before: Path | None) -> Iterator[Server]:
    """A world of two sites on ``release`` served the ``kind`` way, both running ``plugin``
    (None: this working tree's); stopped on exit."""
    base = Path(tempfile.mkdtemp(prefix=f"userrelay-wp-bench-{kind}-"))
    with build_world(base, releases=(release, release)) as world:
        if plugin is not None:
            for site in (world.a, world.b):
                link = site.path / "wp-content" / "plugins" / "userrelay"
                link.unlink()
                link.symlink_to(plugin, True)
                site.stop()  # no worker keeps the old path in its realpath cache
                site.start()
        if kind == "php-fpm":
            with fpm_sites(world, base) as (ca, stacks):
                yield Server(kind, world, ca, creates, before, Meter({
                    "site a": lambda: (sessions(stacks["a"]), set()),
                    "database": lambda: (database(world), set()),
                    "relay": lambda: (sessions(stacks["relay"]), relay(world))}))
        else:
            yield Server(kind, world, None, creates, before, Meter({
                "site a": lambda: ({world.a.server_pid or 0}, set()),
                "database": lambda: (database(world), set()),
                "relay": lambda: (set(), relay(world))}))
    shutil.rmtree(base, ignore_errors=True)  # kept after a failure: its logs say what happened


@contextlib.contextmanager
def plugin_at(revision: str | None, option: str) -> Iterator[Path | None]:
    """The plugin as it was at a git revision, in a temporary folder (None: no revision)."""
    if revision is None:
        yield None
        return
    root = Path(__file__).resolve().parents[1]
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           cwd=root, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise SystemExit(f"{option} {revision!r}: not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="userrelay-before-") as folder:
        archive = subprocess.run(["git", "archive", found.stdout.strip(), "plugin-stub/userrelay"],
                                 cwd=root, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        yield Path(folder) / "plugin-stub" / "userrelay"


def release_option(value: str) -> str | None:
    if value == "system":
        return None
    if value not in SUITES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a WordPress release the lab knows (system, {', '.join(SUITES)})")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["php-s", "php-fpm", "both"], default="both")
    parser.add_argument("--php-s-release", type=release_option, default="6.1",
                        help="WordPress under php -S: 6.1, 6.8 or system (default 6.1)")
    parser.add_argument("--fpm-release", type=release_option, default="6.8",
                        help="WordPress under PHP-FPM: 6.1, 6.8 or system (default 6.8)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per plugin state")
    parser.add_argument("--saves", type=int, default=40,
                        help="sequential creates per round and state")
    parser.add_argument("--creates", type=int, default=200,
                        help="concurrent creates per round and state")
    parser.add_argument("--profile", action="store_true",
                        help="timing spans of site a's requests from its PHP error log")
    parser.add_argument("--cpu-profile", action="store_true",
                        help="site A's CPU per create by call stack, in each plugin state "
                             "(installs Debian's php-excimer)")
    parser.add_argument("--users", type=int, default=1000,
                        help="apply-rate users, on each server (0: skip)")
    parser.add_argument("--plugin", metavar="REVISION",
                        help="run the plugin as it is at this git revision on both sites "
                             "(default: this working tree's, edits included)")
    parser.add_argument("--before", metavar="REVISION",
                        help="also measure site A with the plugin as it was at this git "
                             "revision, in the same alternating rounds (e.g. HEAD)")
    args = parser.parse_args()
    for name, value, least in (("--rounds", args.rounds, 1), ("--saves", args.saves, 1),
                               ("--creates", args.creates, 1), ("--users", args.users, 0)):
        if value < least:
            raise SystemExit(f"{name} must be at least {least}, not {value}")
    reason = (ensure_packages() or (ensure_packages(WEB_PACKAGES)
                                    if args.server != "php-s" else None)
              or (ensure_packages(CPU_PACKAGES) if args.cpu_profile else None))
    if reason:
        raise SystemExit(f"cannot run WordPress here: {reason}")
    kinds = ["php-s", "php-fpm"] if args.server == "both" else [args.server]
    releases = {"php-s": args.php_s_release, "php-fpm": args.fpm_release}
    try:
        with contextlib.ExitStack() as stack:
            plugin = stack.enter_context(plugin_at(args.plugin, "--plugin"))
            before = stack.enter_context(plugin_at(args.before, "--before"))
            servers = [stack.enter_context(server(kind, releases[kind], args.creates, plugin,
                                                  before))
                       for kind in kinds]
            print("one run, the servers' rounds alternating: " + "; ".join(
                f"{s.kind}: {s.label}" for s in servers) + f"; the plugin: "
                f"{args.plugin or 'this working tree'}"
                + (f", and as at {args.before} (before)" if args.before else ""), flush=True)
            for s in servers:
                stack.callback(s.stop)
                s.start(args.profile, args.cpu_profile)
            for r in range(args.rounds):
                for s in servers if r % 2 == 0 else reversed(servers):
                    s.round(r, args.saves, args.creates)
                    print(f"round {r + 1}/{args.rounds} on {s.kind} done", flush=True)
            for s in servers:
                s.stop()
                s.report(args.profile, args.cpu_profile)
            if args.users:
                for s in servers:
                    s.apply_rate(args.users)
            summary([(s.label, s.kind, s.figures) for s in servers])
    except (LabError, ReleaseError) as error:
        raise SystemExit(f"the WordPress lab failed: {error}") from None


if __name__ == "__main__":
    main()
