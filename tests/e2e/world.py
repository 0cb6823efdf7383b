"""The end-to-end world: two real WordPress sites (Debian's packages, a private MariaDB), the
companion plugin active on both, and a real relay process between them. Used by the suite and
by ``make demo``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from relay import config as config_module
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.keys.signatures import Direction
from tests.e2e.lab_site import Site
from tests.e2e.wplab import Lab
from tests.support import output_file, record, secret_key

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugin-stub" / "userrelay"
ALL = ["create", "edit", "delete", "password", "roles", "metadata"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, condition: Callable[[], Any], timeout: float = 30,
               every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last seen: {last!r})")


class RelayDaemon:
    """``userrelay serve`` as a child process, restartable with other links."""

    def __init__(self, workdir: Path, sites: dict[str, Site]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.sites = sites
        self.config_path = workdir / "relay.yaml"
        # In the test session, beside all other relay output (checked for secrets at its end).
        self.log_path = output_file("e2e-relay") or workdir / "relay.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_settings: dict[str, Any] | None = None  # see enable_admin
        self.ca_files: dict[str, Path] = {}  # site -> the CA file its https URL is verified by
        self.configure([])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, links: list[dict[str, Any]], **delivery: Any) -> None:
        document = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database": str(self.workdir / "relay.sqlite3"),
            "delivery": {"retry_schedule": ["1s", "2s"], "jitter": 0.1, "max_attempts": 100,
                         "timeout": 20, "lease": 60, **delivery},
            "sites": [{"id": s.name, "label": s.name, "url": s.url, "allow_http": True,
                       **({"ca_file": str(self.ca_files[s.name])} if s.name in self.ca_files
                          else {})}
                      for s in self.sites.values()],
            "links": links,
        }
        if self.admin_settings is not None:
            document["admin"] = self.admin_settings
        self.config_path.write_text(yaml.safe_dump(document))

    def enable_admin(self, token: str) -> str:
        """From the next (re)start, the admin API on a port of its own; its base URL."""
        token_file = self.workdir / "admin.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        port = free_port()
        self.admin_settings = {"host": "127.0.0.1", "port": port,
                               "token_file": str(token_file)}
        return f"http://127.0.0.1:{port}"

    def generate_keys(self) -> dict[str, str]:
        config = config_module.load(self.config_path)
        store = KeyStore(config.database_path, config.master_key_path)
        try:
            return {name: secret_key(store.generate(name)).secret for name in self.sites}
        finally:
            store.close()

    def start(self) -> None:
        assert self.process is None, "the relay is already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        log.close()

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError("the relay exited:\n" + self.log_path.read_text()[-3000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True
        wait_until("the relay listens", listening, timeout=20, every=0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart_with(self, links: list[dict[str, Any]], **delivery: Any) -> None:
        self.stop()
        self.configure(links, **delivery)
        self.start()

    def userrelay(self, *args: str, keep_output: bool = True) -> subprocess.CompletedProcess[str]:
        """``userrelay ARGS --config …`` as an admin runs it, beside the running relay; its
        output is kept with the session's (checked for secrets) unless ``keep_output`` is false
        (``keys rotate`` prints a key, once, on purpose)."""
        result = subprocess.run([sys.executable, "-m", "relay", *args, "--config",
                                 str(self.config_path)], capture_output=True, text=True,
                                check=False, cwd=ROOT, timeout=120)
        if keep_output:
            record("e2e-cli", f"$ userrelay {' '.join(args)}\n{result.stdout}{result.stderr}")
        return result

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3
        with sqlite3.connect(self.workdir / "relay.sqlite3") as conn:
            return conn.execute(sql, params).fetchall()

    def settled(self) -> bool:
        """Nothing is pending at the relay."""
        return self.db("SELECT count(*) FROM deliveries WHERE state IN "
                       "('waiting', 'ready', 'leased')") == [(0,)]


class World:
    def __init__(self, lab: Lab, a: Site, b: Site, relay: RelayDaemon) -> None:
        self.lab, self.a, self.b, self.relay = lab, a, b, relay

    def link(self, direction: str, outgoing: list[str] | None = None,
             incoming: list[str] | None = None, match_by: str = "email") -> None:
        """Set up site a's link to b, restart the relay with it, and, as an admin does, test
        both sites' connections and start the link."""
        self.relay.restart_with([{"id": "a-b", "site": "a", "remote": "b",
                                  "direction": direction, "outgoing": outgoing or ALL,
                                  "incoming": incoming or ALL, "match_by": match_by}])
        for site in ("a", "b"):
            self.admin("sites", "test", site)
        self.admin("links", "start", "a-b")

    def admin(self, *args: str) -> str:
        """Run a ``userrelay`` command that must succeed; its output."""
        result = self.relay.userrelay(*args)
        assert 0 == result.returncode, (f"userrelay {' '.join(args)} exited "
                                        f"{result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def quiet(self) -> None:
        """Wait until both outboxes are empty and the relay has nothing pending."""
        self.quiet_outboxes()
        wait_until("the relay delivers everything", self.relay.settled)

    def quiet_outboxes(self, timeout: float = 120) -> None:
        for site in (self.a, self.b):
            if site.running:
                wait_until(f"site {site.name}'s outbox empties",
                           functools.partial(_outbox_empty, site), timeout=timeout)


def _outbox_empty(site: Site) -> bool:
    return outbox(site) == 0


def outbox(site: Site) -> int:
    return int(site.php_json("global $wpdb; echo json_encode((int) $wpdb->get_var("
                             "\"SELECT COUNT(*) FROM {$wpdb->prefix}userrelay_outbox\"));"))


def user(site: Site, email: str) -> dict[str, Any] | None:
    """A user of ``site`` as the database has it (None when absent)."""
    found: dict[str, Any] | None = site.php_json(f"""
        $u = get_user_by('email', {json.dumps(email)});
        if (!$u) {{ echo 'null'; return; }}
        echo json_encode(['id' => $u->ID, 'login' => $u->user_login, 'email' => $u->user_email,
            'first_name' => $u->first_name, 'last_name' => $u->last_name,
            'display_name' => $u->display_name, 'roles' => array_values($u->roles),
            'pass' => $u->user_pass, 'meta' => get_user_meta($u->ID, 'favourite_colour', true)]);
    """)
    return found


@contextlib.contextmanager
def build_world(base: Path, ports: tuple[int, int] | None = None,
                releases: tuple[str | None, str | None] = (None, None)) -> Iterator[World]:
    """Sites a and b with the plugin, keys generated and pasted, the relay running (no links).
    ``releases``: the WordPress release of a and of b ("6.1", "6.8"; None: the system's)."""
    with Lab(base / "lab", keep=False) as lab:
        relay = RelayDaemon(base, {})
        port_a, port_b = ports or (free_port(), free_port())
        sites = {name: lab.add_site(name, port, plugin_dirs={"userrelay": PLUGIN},
                                    wordpress=release)
                 for name, port, release in (("a", port_a, releases[0]),
                                             ("b", port_b, releases[1]))}
        relay.sites = sites
        relay.configure([])
        keys = relay.generate_keys()
        for name, site in sites.items():
            site.set_constants({"USERRELAY_URL": relay.url, "USERRELAY_SITE": name,
                                "USERRELAY_KEY": keys[name]})
        relay.start()
        try:
            yield World(lab, sites["a"], sites["b"], relay)
        finally:
            relay.stop()


# --- talking to a plugin as the relay does (protocol 2) ----------------------------------------

def signed_for_plugin(site: Site, key: SiteKey, operation: str, **params: Any
                      ) -> tuple[bytes, dict[str, str]]:
    """A body for ``operation`` on ``site`` and its headers, signed as the relay signs."""
    body = json.dumps(signatures.envelope(operation, site.name, **params)).encode()
    return body, signatures.headers(key, body, Direction.TO_SITE)


def send(url: str, body: bytes | None, headers: dict[str, str], method: str = "POST"
         ) -> tuple[int, Any]:
    """One HTTP request; its status and JSON answer (None when the answer is not JSON)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def post_to_plugin(site: Site, key: SiteKey, operation: str, **params: Any) -> tuple[int, Any]:
    """``operation`` sent to ``site``'s plugin as the relay sends it; status and answer."""
    body, headers = signed_for_plugin(site, key, operation, **params)
    return send(f"{site.url}/wp-json/userrelay/v1/{operation}", body, headers)


def deliver(site: Site, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POSTs a signed delivery straight to ``site``'s plugin, as the relay would (with the key
    pasted into it); its results."""
    status, answer = post_to_plugin(site, SiteKey(str(site.constants["USERRELAY_KEY"])),
                                    "events", events=events)
    assert 200 == status, f"the plugin answered {status}: {answer!r}"
    return answer["results"]  # type: ignore[no-any-return]
