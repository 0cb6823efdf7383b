"""Real WordPress sites on loopback for the end-to-end suite and the demo.

Owns the lab: one private MariaDB (socket only) and WordPress sites copied from Debian's package,
installed headlessly, each served by its own ``php -S 127.0.0.1:PORT`` with four workers. Every
process it starts runs in its own session and is stopped by PID or process group. It must not touch
the system MariaDB, /etc/wordpress or anything outside its base directory (ensure_packages() aside),
register anything global, or listen beyond 127.0.0.1. Usage: tests/e2e/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.e2e import wpreleases

WORDPRESS_SOURCE = Path("/usr/share/wordpress")
# faketime: a site whose clock is off (Site.set_clock_offset)
PACKAGES = ["wordpress", "php-cli", "php-mysql", "php-curl", "php-xml", "php-mbstring",
            "mariadb-server", "faketime"]
LOOPBACK = "127.0.0.1"
ADMIN_LOGIN, ADMIN_EMAIL = "admin", "admin@example.test"
SERVER_WORKERS = "4"  # a single-worker php -S deadlocks when WordPress calls itself
START_TIMEOUT = 30.0  # s for MariaDB or a web server to answer; both take under a second here
STOP_TIMEOUT = 10.0  # s to wait after each signal before sending a harder one
PHP_TIMEOUT = 300.0  # s for one php() run
SITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
CONSTANT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Constant = str | bool | int

# php -S router of a subdirectory network: what WordPress's .htaccess rules do for sub-sites
# (/sub/wp-admin/..., /sub/wp-login.php run the root's files); existing files as php -S serves
# them; any other path goes to the root index.php, which serves /sub/ and /sub/wp-json/.
ROUTER_FILE = "wplab-router.php"
ROUTER = r"""<?php
$wplab_path = (string) parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if (!file_exists(__DIR__ . $wplab_path)
    && preg_match('#^/[_0-9a-zA-Z-]+(/(?:wp-(?:admin|includes|content)(?:/.*)?|[^/]+\.php))$#',
                  $wplab_path, $wplab_m)) {
    $wplab_file = __DIR__ . $wplab_m[1];
    if (is_dir($wplab_file)) {
        $wplab_file = rtrim($wplab_file, '/') . '/index.php';
        $wplab_path = rtrim($wplab_path, '/') . '/index.php';
    }
    if (is_file($wplab_file) && substr($wplab_file, -4) === '.php') {
        $_SERVER['SCRIPT_FILENAME'] = $wplab_file;
        $_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = $wplab_path;
        chdir(dirname($wplab_file));
        require $wplab_file;
        return true;
    }
    if (is_file($wplab_file)) {
        $wplab_types = ['css' => 'text/css', 'js' => 'application/javascript',
                        'svg' => 'image/svg+xml'];
        $wplab_ext = pathinfo($wplab_file, PATHINFO_EXTENSION);
        header('Content-Type: ' . ($wplab_types[$wplab_ext] ?? 'application/octet-stream'));
        readfile($wplab_file);
        return true;
    }
}
if ($wplab_path !== '/' && file_exists(__DIR__ . $wplab_path)) {
    return false;
}
$_SERVER['SCRIPT_FILENAME'] = __DIR__ . '/index.php';
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = '/index.php';
require __DIR__ . '/index.php';
return true;
"""


class LabError(RuntimeError):
    """Something in the lab did not come up, run or stop; the message names it and shows its log."""


class PhpError(LabError):
    """PHP run in a site's context exited non-zero, or did not print the expected JSON."""


def ensure_packages(packages: list[str] | None = None) -> str | None:
    """Installs Debian's WordPress, PHP and MariaDB (or ``packages``) if missing (as root);
    returns None when WordPress can run here, else a one-line reason (for pytest.skip). No
    service is started by the installation (policy-rc.d)."""
    packages = packages or PACKAGES
    if shutil.which("dpkg-query") is None:
        return f"not a Debian system: the lab needs Debian's {' '.join(packages)}"
    listed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
                            capture_output=True, text=True).stdout.splitlines()
    installed = {line.split()[0] for line in listed if line.endswith(" installed")}
    if not (missing := [name for name in packages if name not in installed]):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Debian packages missing ({' '.join(missing)}); installing needs root and apt-get"
    # invoke-rc.d asks policy-rc.d; exit 101 means "do not start", so mariadb-server's postinst
    # leaves the system server stopped. A policy-rc.d that someone else put there stays.
    policy = Path("/usr/sbin/policy-rc.d")
    if created := not policy.exists():
        policy.write_text("#!/bin/sh\n# written by tests/e2e/wplab.py while installing\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    try:
        for args in (["update"], ["install", "-y", "--no-install-recommends", *missing]):
            done = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                last = (done.stderr.strip() or done.stdout.strip() or "-").splitlines()[-1]
                return f"apt-get {args[0]} failed (exit {done.returncode}): {last}"
        return None
    finally:
        if created:
            policy.unlink(missing_ok=True)


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log from offset on, without PHP deprecation noise."""
    try:
        text = path.read_bytes()[offset:].decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join([ln for ln in text.splitlines() if "PHP Deprecated" not in ln][-lines:]) or "-"


def _wait_until(what: str, ready: Callable[[], bool], alive: Callable[[], bool], log: Path) -> None:
    """Polls ready() until it holds; else raises naming `what`, with the tail of its log."""
    deadline, delay = time.monotonic() + START_TIMEOUT, 0.01
    while not ready():
        if not alive() or time.monotonic() > deadline:
            state = "exited" if not alive() else f"is not up after {START_TIMEOUT:.0f} s"
            raise LabError(f"{what} {state}; tail of {log}:\n{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _stop_group(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Stops a process started with start_new_session=True and whatever is left in its group.

    php -S wants SIGINT: it then reaps its workers (on SIGTERM it dies and orphans them). Waiting
    without reaping (WNOWAIT) keeps the PID and group ours until the final SIGKILL."""
    if process.returncode is None:
        for sig in (first, signal.SIGTERM):
            os.killpg(process.pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while not os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            else:
                break
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT)


def _php_literal(value: Constant) -> str:
    if isinstance(value, bool | int):
        return str(value).lower()  # True -> true, 42 -> 42
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never proxied


def _http_status(url: str) -> int | None:
    """The status of a GET, or None while nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except OSError:
        return None


class Site:
    """One WordPress site of a Lab: its tree, database, wp-config.php and php -S web server."""

    def __init__(self, lab: Lab, name: str, port: int, constants: Mapping[str, Constant]) -> None:
        self.name, self.port, self.url = name, port, f"http://{LOOPBACK}:{port}"
        self.path, self.database = lab.base_dir / "sites" / name, f"wp_{name}"
        self.admin_login, self.admin_password = ADMIN_LOGIN, secrets.token_urlsafe(12)
        self.constants = dict(constants)  # the extra ones, over the lab's defaults
        self.debug_log = lab.log_dir / f"{name}-debug.log"
        self.server_log = lab.log_dir / f"{name}-server.log"
        self._lab = lab
        self._server: subprocess.Popen[bytes] | None = None
        self.network = False  # a subdirectory multisite network (see Lab.add_site)
        self.subsites: dict[str, int] = {}  # path ("sub") -> blog id, on a network
        self.release = ""  # the WordPress release it runs, "6.1" or "6.8" (Lab.add_site)
        self.clock_offset = 0  # seconds this site's PHP clock is off (libfaketime), 0: none

    def set_clock_offset(self, seconds: int) -> None:
        """Puts this site's PHP clock (web server and php() runs) ``seconds`` off the real one,
        through Debian's libfaketime; restarts a running server."""
        self.clock_offset = seconds
        if self.running:
            self.stop()
            self.start()

    def _clocked(self, command: list[str]) -> list[str]:
        if not self.clock_offset:
            return command
        return ["faketime", "-f", f"{self.clock_offset:+d}", *command]

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def php(self, code: str, before_load: str = "") -> str:
        """Runs PHP statements (no opening tag) after wp-load.php, as no user; returns stdout.
        PHP errors go to stderr; a non-zero exit raises PhpError with it and the debug log."""
        script = (
            f"<?php\n$_SERVER = ['HTTP_HOST' => '{LOOPBACK}:{self.port}', 'REQUEST_URI' => '/', "
            f"'SERVER_NAME' => '{LOOPBACK}', 'SERVER_PORT' => '{self.port}', "
            f"'REQUEST_METHOD' => 'GET', 'REMOTE_ADDR' => '{LOOPBACK}'] + $_SERVER;\n"
            # A script read from stdin gets no STDERR constant; code may want it.
            "define('STDERR', fopen('php://stderr', 'w'));\n"
            f"{before_load}\nrequire {_php_literal(str(self.path / 'wp-load.php'))};\n"
            # WP_DEBUG_DISPLAY false switched display off: errors of this run go to stderr.
            "ini_set('display_errors', 'stderr');\n"
            f"error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED);\n{code}\n")
        log_size = self.debug_log.stat().st_size if self.debug_log.exists() else 0
        try:
            done = subprocess.run(self._clocked(["php", "-d", "display_errors=stderr"]),
                                  input=script.encode(),
                                  capture_output=True, cwd=self.path, timeout=PHP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise PhpError(f"PHP in site {self.name!r} ran over {PHP_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")[-3000:] or "(empty)"
            raise PhpError(f"PHP in site {self.name!r} exited {done.returncode}; stderr:\n{stderr}"
                           f"\nnew in {self.debug_log}:\n{_tail(self.debug_log, log_size)}")
        return done.stdout.decode(errors="replace")

    def php_json(self, code: str) -> Any:
        """Runs PHP statements that echo JSON; returns it decoded, skipping stray lines before."""
        out = self.php(code).strip()
        for candidate in (out, *reversed(out.splitlines())):
            try:
                return json.loads(candidate)
            except json.JSONDecodeError:
                continue
        raise PhpError(f"PHP in site {self.name!r} printed no JSON; stdout:\n{out[-2000:]}")

    def db_query(self, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL on the site's database; returns rows as dicts of strings (NULL as None)."""
        return self._lab.db_query(self.database, sql)

    def wp_insert_user_rate(self, count: int) -> float:
        """Users/s of wp_insert_user() for `count` users in one PHP process (deleted after).
        Active plugins' hooks run too: this is the baseline of the site as configured."""
        result = self.php_json(f"""require_once ABSPATH . 'wp-admin/includes/user.php';
            $run = bin2hex(random_bytes(4)); $ids = []; $started = microtime(true);
            for ($i = 0; $i < {int(count)}; $i++) {{
                $ids[] = $id = wp_insert_user(['user_login' => "wplab_{{$run}}_$i",
                    'user_email' => "wplab_{{$run}}_$i@example.test", 'user_pass' => "pw-$i"]);
                if (is_wp_error($id)) {{ fwrite(STDERR, $id->get_error_message()); exit(1); }}
            }}
            echo json_encode(['elapsed' => microtime(true) - $started]);
            array_map('wp_delete_user', $ids);""")
        return count / max(float(result["elapsed"]), 1e-9)

    def _write_config(self) -> None:
        defaults: dict[str, Constant] = {  # no salts: WordPress keeps its own in the database
            "DB_NAME": self.database, "DB_USER": "root", "DB_PASSWORD": "",
            "DB_HOST": f"localhost:{self._lab.db_socket}", "DB_CHARSET": "utf8mb4",
            "DB_COLLATE": "", "WP_HOME": self.url, "WP_SITEURL": self.url,
            "WP_ENVIRONMENT_TYPE": "local",  # Application Passwords over plain http
            "WP_HTTP_BLOCK_EXTERNAL": True, "WP_ACCESSIBLE_HOSTS": "localhost,127.0.0.1",
            "DISABLE_WP_CRON": True, "AUTOMATIC_UPDATER_DISABLED": True, "WP_DEBUG": True,
            "WP_DEBUG_LOG": str(self.debug_log), "WP_DEBUG_DISPLAY": False}
        if self.network:  # one home per blog: WP_HOME / WP_SITEURL would force the main one
            del defaults["WP_HOME"], defaults["WP_SITEURL"]
            defaults |= {"MULTISITE": True, "SUBDOMAIN_INSTALL": False,
                         "DOMAIN_CURRENT_SITE": f"{LOOPBACK}:{self.port}",
                         "PATH_CURRENT_SITE": "/", "SITE_ID_CURRENT_SITE": 1,
                         "BLOG_ID_CURRENT_SITE": 1}
        lines = ["<?php", f"// Lab site {self.name!r}: written by tests/e2e/wplab.py."]
        for name, value in (defaults | self.constants).items():
            if not CONSTANT_NAME.match(name):
                raise LabError(f"site {self.name!r}: {name!r} is not a PHP constant name")
            lines.append(f"define('{name}', {_php_literal(value)});")
        lines += ["$table_prefix = 'wp_';",
                  "if ( ! defined( 'ABSPATH' ) ) { define( 'ABSPATH', __DIR__ . '/' ); }",
                  "require_once ABSPATH . 'wp-settings.php';", ""]
        (self.path / "wp-config.php").write_text("\n".join(lines))

    def set_constants(self, constants: Mapping[str, Constant | None]) -> None:
        """Merges constants into wp-config.php (None removes one); restarts a running server,
        so the next request sees them (php -S would keep the old compiled file for ~2 s)."""
        merged = self.constants | dict(constants)
        self.constants = {name: value for name, value in merged.items() if value is not None}
        self._write_config()
        if self.running:
            self.stop()
            self.start()

    def start(self) -> None:
        """Starts php -S on 127.0.0.1:port; returns once GET /wp-json/ answers 200."""
        index = f"{self.url}/wp-json/"
        if self.running:
            return
        if _http_status(index) is not None:  # else we would take another server's answer as ours
            raise LabError(f"site {self.name!r}: something already answers on {self.url}")
        with self.server_log.open("ab") as log:
            router = [str(self.path / ROUTER_FILE)] if self.network else []
            self._server = subprocess.Popen(
                self._clocked(["php", "-S", f"{LOOPBACK}:{self.port}", "-t", str(self.path),
                               *router]),
                cwd=self.path,
                env=dict(os.environ, PHP_CLI_SERVER_WORKERS=SERVER_WORKERS,
                         DONT_FAKE_MONOTONIC="1"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            _wait_until(f"web server of site {self.name!r} ({self.url})",
                        lambda: _http_status(index) is not None, lambda: self.running,
                        self.server_log)
            if (status := _http_status(index)) != 200:
                raise LabError(f"site {self.name!r}: GET {index} answered {status}; "
                               f"tail of {self.debug_log}:\n{_tail(self.debug_log)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the web server with all its workers; the database stays up."""
        if self._server is not None:
            _stop_group(self._server, signal.SIGINT)
            self._server = None


class Lab:
    """A private MariaDB plus WordPress sites under base_dir; as a context manager it cleans up."""

    def __init__(self, base_dir: Path | str | None = None, keep: bool = False) -> None:
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="wplab-")).absolute()
        self.keep, self._owns_dir = keep, base_dir is None  # close() removes only a dir it filled
        self.sites: dict[str, Site] = {}
        self.log_dir, self.db_dir = self.base_dir / "logs", self.base_dir / "mariadb"
        self.db_log, self.db_socket = self.log_dir / "mariadb.log", self.db_dir / "mariadb.sock"
        self._db: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Lab:
        try:
            self.start()
            return self
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Creates the base directory and starts the private MariaDB; no-op once started."""
        if self._db is not None:
            return
        if self.base_dir.exists() and any(self.base_dir.iterdir()):
            raise LabError(f"lab directory {self.base_dir} is not empty: remove it first")
        self._owns_dir = True
        data, config = self.db_dir / "data", self.db_dir / "my.cnf"
        for folder in (self.log_dir, data, self.base_dir / "sites"):
            folder.mkdir(parents=True, exist_ok=True)
        install = subprocess.Popen(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output = install.communicate()[0].decode(errors="replace")
        finally:  # on Ctrl-C too: the bootstrap mariadbd it runs must not outlive the lab
            _stop_group(install, signal.SIGTERM)
        if install.returncode != 0:
            raise LabError(f"mariadb-install-db exited {install.returncode}:\n{output}")
        config.write_text("\n".join([
            "[mysqld]", f"datadir={data}", f"socket={self.db_socket}", "skip-networking",
            f"pid-file={self.db_dir}/mariadbd.pid", f"log-error={self.db_log}",
            f"tmpdir={self.db_dir}", "user=root", "skip-log-bin",
            "innodb_flush_log_at_trx_commit=2", "innodb_buffer_pool_size=64M", ""]))
        self._db = subprocess.Popen(["mariadbd", f"--defaults-file={config}"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        ping = ["mariadb-admin", "--no-defaults", f"--socket={self.db_socket}", "-uroot", "ping"]
        _wait_until("MariaDB", lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                    lambda: self._db is not None and self._db.poll() is None, self.db_log)

    def db_query(self, database: str, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL with the mariadb client; returns the rows of all result sets (NULL as None)."""
        done = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.db_socket}", "--user=root", "--xml",
             f"--database={database}", f"--execute={sql}"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = (done.stderr.strip() or "no output").splitlines()[-1]
            raise LabError(f"SQL on database {database!r} failed: {reason}\nSQL: {sql}")
        body = re.sub(r"<\?xml[^>]*\?>", "", done.stdout)  # one declaration per result set

        rows = ElementTree.fromstring(f"<all>{body}</all>").findall("resultset/row")  # noqa: S314
        nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
        return [{field.get("name", ""): None if field.get(nil) == "true" else (field.text or "")
                 for field in row.findall("field")} for row in rows]

    def add_site(self, name: str, port: int, constants: Mapping[str, Constant] | None = None,
                 plugins: list[str] | None = None,
                 plugin_dirs: Mapping[str, Path | str] | None = None,
                 subsites: list[str] | None = None, wordpress: str | None = None) -> Site:
        """Installs a WordPress site, activates its plugins and serves it on 127.0.0.1:port.

        constants: extra wp-config.php constants (they override the lab's defaults).
        plugins: plugin files already in wp-content/plugins to activate, e.g. 'akismet/akismet.php'.
        plugin_dirs: name -> a directory holding name.php, symlinked into wp-content/plugins and
        activated (edits to the plugin show at once).
        subsites: makes the site a subdirectory multisite network with these sub-sites besides
        the main one (e.g. ["sub"] serves 127.0.0.1:port/sub/); plugins are network-activated.
        wordpress: the release ("6.1", "6.8"); None: the system's package (tests/e2e/wpreleases.py
        fetches the other Debian release's once)."""
        if self._db is None:
            raise LabError("the lab is not started: use `with Lab() as lab:` or lab.start()")
        if not SITE_NAME.match(name) or not 1024 <= port <= 65535:
            raise LabError(f"site {name!r} on port {port}: want {SITE_NAME.pattern}, 1024-65535")
        if name in self.sites or any(site.port == port for site in self.sites.values()):
            raise LabError(f"site {name!r} on port {port}: name or port already in the lab")
        try:
            tree = wpreleases.wordpress_tree(wordpress)
        except wpreleases.ReleaseError as error:
            raise LabError(f"site {name!r}: {error}") from None
        site = Site(self, name, port, constants or {})
        site.release = wpreleases.release_of(tree)
        self.sites[name] = site  # registered before anything starts, so close() stops it
        self.db_query("mysql", f"CREATE DATABASE `{site.database}` CHARACTER SET utf8mb4")
        # -L: Debian ships relative symlinks. Its wp-config.php picks a config by host name
        # without the port, so two sites on one host would collide: each gets a plain one.
        subprocess.run(["cp", "-rL", str(tree), str(site.path)], check=True)
        (site.path / "wp-config.php").unlink()
        site._write_config()
        site.php("require_once ABSPATH . 'wp-admin/includes/upgrade.php';\n"
                 f"wp_install('UserRelay lab {name}', '{ADMIN_LOGIN}', '{ADMIN_EMAIL}', true, '', "
                 f"{_php_literal(site.admin_password)});\n"
                 "$GLOBALS['wp_rewrite']->set_permalink_structure('/%postname%/');\n"
                 "flush_rewrite_rules(false);\n"
                 "array_map('wp_salt', ['auth', 'secure_auth', 'logged_in', 'nonce']);",
                 before_load="define('WP_INSTALLING', true);")
        if subsites is not None:
            site.subsites = self._make_network(site, subsites)
        for plugin, source in (plugin_dirs or {}).items():
            if not (Path(source) / f"{plugin}.php").is_file():
                raise LabError(f"site {name!r}: plugin dir {source} has no {plugin}.php")
            (site.path / "wp-content/plugins" / plugin).symlink_to(Path(source).absolute(), True)
        if to_activate := [*(plugins or []), *(f"{p}/{p}.php" for p in plugin_dirs or {})]:
            # activate_plugin() runs each plugin's activation hook, as wp-admin does.
            site.php("require_once ABSPATH . 'wp-admin/includes/plugin.php';\n"
                     f"foreach (json_decode({_php_literal(json.dumps(to_activate))}) as $file) {{\n"
                     "  if (is_wp_error($result = activate_plugin($file, '', "
                     f"{_php_literal(site.network)}))) {{\n"
                     "    fwrite(STDERR, \"$file: \" . $result->get_error_message()); exit(1);\n"
                     "  }\n}")
        site.start()
        return site

    def _make_network(self, site: Site, subsites: list[str]) -> dict[str, int]:
        """Turns an installed site into a subdirectory network (what Tools → Network Setup
        does, headlessly) with the given sub-sites; their blog ids by path."""
        for path in subsites:
            if not SITE_NAME.match(path):
                raise LabError(f"site {site.name!r}: sub-site path {path!r}: "
                               f"want {SITE_NAME.pattern}")
        domain = f"{LOOPBACK}:{site.port}"  # ms-settings.php matches it literally, port and all
        site.php("require_once ABSPATH . 'wp-admin/includes/upgrade.php';\n"
                 # As wp-admin/network.php: a single site's wpdb has no network table names.
                 "foreach ($wpdb->tables('ms_global') as $table => $prefixed) {\n"
                 "  $wpdb->$table = $prefixed;\n}\n"
                 "wp_set_current_user(1); install_network();\n"
                 f"$made = populate_network(1, '{domain}', '{ADMIN_EMAIL}', "
                 f"'UserRelay lab {site.name}', '/', false);\n"
                 "if (is_wp_error($made)) { fwrite(STDERR, $made->get_error_message()); exit(1); }")
        site.network = True
        site._write_config()
        (site.path / ROUTER_FILE).write_text(ROUTER)
        blogs = site.php_json(
            "$ids = [];\n"
            f"foreach (json_decode({_php_literal(json.dumps(subsites))}) as $path) {{\n"
            f"  $id = wp_insert_site(['domain' => '{domain}', 'path' => \"/$path/\", "
            "'title' => \"Sub-site $path\", 'user_id' => 1]);\n"
            "  if (is_wp_error($id)) { fwrite(STDERR, $id->get_error_message()); exit(1); }\n"
            # wp_insert_site() strips the port's colon from the domain: put it back.
            f"  $wpdb->update($wpdb->blogs, ['domain' => '{domain}'], ['blog_id' => $id]);\n"
            "  clean_blog_cache($id); switch_to_blog($id);\n"
            f"  update_option('home', \"http://{domain}/$path\");\n"
            f"  update_option('siteurl', \"http://{domain}/$path\");\n"
            "  update_option('permalink_structure', '/%postname%/');\n"
            "  delete_option('rewrite_rules'); restore_current_blog();\n"
            "  $ids[$path] = $id;\n}\necho json_encode((object) $ids);")
        return {path: int(blog_id) for path, blog_id in blogs.items()}

    def close(self) -> None:
        """Stops web servers, then MariaDB; removes base_dir unless keep. Safe after any failure."""
        errors: list[str] = []
        for site in self.sites.values():
            try:
                site.stop()
            except Exception as error:  # noqa: BLE001 - keep going: the others must stop too
                errors.append(f"site {site.name!r}: {error}")
        if (db := self._db) is not None:
            try:
                _stop_group(db, signal.SIGTERM)  # mariadbd shuts down cleanly on SIGTERM
                self._db = None
            except Exception as error:  # noqa: BLE001 - reported with the others
                errors.append(f"MariaDB (pid {db.pid}): {error}")
        if self._owns_dir and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if errors:
            raise LabError("the lab did not stop cleanly: " + "; ".join(errors))


def name_port_list(text: str) -> list[tuple[str, int]]:  # argparse shows a ValueError as usage
    return [(item.partition(":")[0], int(item.partition(":")[2])) for item in text.split(",")]


def _up(args: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):  # both tear down, even if started with INT ignored
        signal.signal(sig, signal.default_int_handler)
    if reason := ensure_packages():
        print(f"cannot run WordPress here: {reason}", file=sys.stderr)
        return 1
    try:
        with Lab(args.dir, keep=args.keep) as lab:
            for name, port in args.sites:
                site = lab.add_site(name, port, plugin_dirs={Path(p).name: p for p in args.plugin})
                print(f"{site.name}: {site.url}/wp-admin/  login {site.admin_login}  "
                      f"password {site.admin_password}", flush=True)
            print(f"lab in {lab.base_dir}, logs in {lab.log_dir}; Ctrl-C stops it", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.wplab", description=(
        "check: say whether WordPress can run here (installs the packages as root). "
        "up: bring sites up until Ctrl-C or SIGTERM, then tear them down."))
    parser.add_argument("command", choices=["check", "up"])
    parser.add_argument("--dir", default="var/demo", help="lab directory, removed on stop")
    parser.add_argument("--sites", default="a:8081,b:8082", type=name_port_list,
                        help="NAME:PORT,... (default: a:8081,b:8082)")
    parser.add_argument("--plugin", action="append", default=[], help="plugin dir to activate")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory on stop")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    reason = ensure_packages()
    print(f"cannot run WordPress here: {reason}" if reason else "ready: WordPress can run here")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
