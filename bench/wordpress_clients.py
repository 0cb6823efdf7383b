"""Load and watchers for bench/wordpress.py: REST clients creating users on a lab site, a
watcher of site B's users table, and the relay's own record of each event's legs."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.world import World, wait_until
from tests.e2e.wpadmin import app_password
from tests.e2e.wplab import Site
from tests.tlslab import LocalCA

PLUGIN_FILE = "userrelay/userrelay.php"
BEFORE_DIR = "userrelay-before"  # the plugin at another revision, for --before
CLIENTS = 8


# Seconds between paced saves: long enough for a save's send after its answer to end before
# the next save starts, as on a site whose saves are not back to back.
PAUSE = 0.2

class Client:
    """Creates users on a site through its REST API; remembers when each create started."""

    def __init__(self, site: Site, ca: LocalCA | None) -> None:
        self.site, self.auth = site, app_password(site)
        self.context = ssl.create_default_context(cafile=str(ca.cert)) if ca else None
        self.started: dict[str, float] = {}  # login -> time.time() at the start of its create
        self.answered: dict[str, float] = {}  # login -> time.time() when its answer was read

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
        self.answered[login] = time.time()
        return (time.perf_counter() - start) * 1000

    def sequential(self, logins: list[str], pause: float = 0.0) -> list[float]:
        """Per-request milliseconds of ``logins`` created one after another, ``pause`` seconds
        apart (0: back to back, each starting as the last one's answer arrives)."""
        times = []
        for login in logins:
            times.append(self.create(login))
            time.sleep(pause)
        return times

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


def relay_legs(world: World, client: Client) -> dict[str, tuple[float, float, float]]:
    """login -> ms from its create's start until A answered it, until the relay stored its
    event, and until B answered that event's delivery."""
    wait_until("the relay delivers everything", world.relay.settled, timeout=120)
    legs = {}
    for payload, created, updated in world.relay.db(
            "SELECT payload, created_at, updated_at FROM deliveries WHERE target = 'b' "
            "AND state = 'done'"):
        login = json.loads(payload).get("user", {}).get("login")
        if login in client.started and login in client.answered:
            start = client.started[login]
            legs[login] = ((client.answered[login] - start) * 1000, (created - start) * 1000,
                           (updated - start) * 1000)
    return legs


def set_plugin(site: Site, state: str) -> None:
    """Site A's plugin "off", "on" (this working tree's) or "before" (BEFORE_DIR's). Two PHP
    runs: one PHP process cannot load both copies (they declare the same classes)."""
    site.php("require_once ABSPATH . 'wp-admin/includes/plugin.php'; deactivate_plugins(["
             f"'{PLUGIN_FILE}', '{BEFORE_DIR}/userrelay.php']);")
    if state != "off":
        plugin = PLUGIN_FILE if state == "on" else f"{BEFORE_DIR}/userrelay.php"
        site.php("require_once ABSPATH . 'wp-admin/includes/plugin.php'; "
                 f"$done = activate_plugin('{plugin}'); if (is_wp_error($done)) {{ "
                 "fwrite(STDERR, $done->get_error_message()); exit(1); }")
