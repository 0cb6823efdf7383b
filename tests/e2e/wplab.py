"""Real WordPress sites on loopback for the end-to-end suite and the demo.

This module owns the lab: one private MariaDB server (socket only, no TCP) and any number of WordPress
sites copied from Debian's ``wordpress`` package, each installed headlessly and served by its own
``php -S 127.0.0.1:PORT`` with four workers. It starts every process itself, each in its own session, and
stops each one by PID or process group; it registers nothing global and listens only on 127.0.0.1.

It must not touch the system MariaDB, ``/etc/wordpress`` or anything outside its base directory (apart
from installing Debian packages in :func:`ensure_packages`), and it polls conditions instead of sleeping.

Use from tests::

    reason = ensure_packages()          # None, or why WordPress cannot run here (skip with it)
    with Lab() as lab:
        a = lab.add_site("a", 8081, plugin_dirs={"userrelay": Path("plugin-stub/userrelay")})
        a.php_json("echo json_encode(get_bloginfo('version'));")

From a shell: ``python -m tests.e2e.wplab check`` and
``python -m tests.e2e.wplab up --dir var/demo --sites a:8081,b:8082 --plugin plugin-stub/userrelay``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

WORDPRESS_SOURCE = Path("/usr/share/wordpress")
PACKAGES = ("wordpress", "php-cli", "php-mysql", "php-curl", "php-xml", "php-mbstring", "mariadb-server")
TOOLS = ("php", "mariadbd", "mariadb-install-db", "mariadb-admin", "mariadb")
LOOPBACK = "127.0.0.1"
ADMIN_LOGIN = "admin"
ADMIN_EMAIL = "admin@example.test"
SERVER_WORKERS = "4"  # a single-worker php -S deadlocks when WordPress calls itself
START_TIMEOUT = 30.0  # s for MariaDB or a web server to answer; both take under a second here
STOP_TIMEOUT = 10.0  # s to wait after each of SIGINT, SIGTERM, SIGKILL
PHP_TIMEOUT = 300.0  # s for one php() run
APT_TIMEOUT = 1800.0  # s for apt-get update or install
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; deep pytest tmp dirs can exceed it
LAB_MARKER = ".wplab"  # an existing non-empty base dir is reused (wiped) only when it holds this file
SITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
CONSTANT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SALTS = ("AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY",
         "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT")

Constant = str | bool | int


class LabError(RuntimeError):
    """Something in the lab did not come up, run or stop; the message names what and shows its log."""


class PhpError(LabError):
    """PHP run in a site's context exited non-zero, or did not print the JSON it was expected to."""


# --- packages ---------------------------------------------------------------------------------------------

def _missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not (WORDPRESS_SOURCE / "wp-load.php").is_file():
        missing.append(str(WORDPRESS_SOURCE / "wp-load.php"))
    return missing


def _missing_packages() -> list[str]:
    listed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *PACKAGES],
                            capture_output=True, text=True).stdout.splitlines()
    installed = {line.split()[0] for line in listed if line.endswith(" installed")}
    return [name for name in PACKAGES if name not in installed]


def _apt_get(*args: str) -> str | None:
    """Runs apt-get without prompts; returns None, or why it failed."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    try:
        done = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"apt-get {args[0]} took longer than {APT_TIMEOUT:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        return f"apt-get {args[0]} failed (exit {done.returncode}): {last}"
    return None


def _install_packages(names: list[str]) -> str | None:
    # invoke-rc.d asks policy-rc.d; exit 101 means "do not start", so mariadb-server's postinst leaves
    # the system server stopped. A policy-rc.d someone else put there stays.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\n# written by tests/e2e/wplab.py while installing\nexit 101\n")
        policy.chmod(0o755)
    try:
        return _apt_get("update") or _apt_get("install", "-y", "--no-install-recommends", *names)
    finally:
        if created:
            policy.unlink(missing_ok=True)


def ensure_packages() -> str | None:
    """Installs Debian's WordPress, PHP and MariaDB when missing (as root, with apt-get).

    Returns None when WordPress can run here, else a one-line reason, e.g. for pytest.skip().
    """
    if shutil.which("dpkg-query") is None:
        missing = _missing_tools()
        return f"not a Debian system and missing {', '.join(missing)}" if missing else None
    missing = _missing_packages()
    if missing and os.geteuid() != 0:
        return f"Debian packages missing ({' '.join(missing)}) and not root to install them"
    if missing and shutil.which("apt-get") is None:
        return f"Debian packages missing ({' '.join(missing)}) and no apt-get to install them"
    failure = _install_packages(missing) if missing else None
    if failure:
        return failure
    missing = _missing_tools()
    return f"packages installed but {', '.join(missing)} still missing" if missing else None


def wordpress_version() -> str:
    """The version of Debian's WordPress, e.g. '6.1.9'."""
    found = re.search(r"\$wp_version\s*=\s*'([^']+)'", (WORDPRESS_SOURCE / "wp-includes/version.php").read_text())
    return found.group(1) if found else "unknown"


# --- helpers ----------------------------------------------------------------------------------------------

def _tail(path: Path, lines: int = 20, offset: int = 0) -> str:
    """The last lines of a log (from offset on), without PHP deprecation noise."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = [line for line in text.splitlines() if "PHP Deprecated" not in line]
    return "\n".join(kept[-lines:]) or "(nothing)"


def _wait_until(what: str, ready: Callable[[], bool], alive: Callable[[], bool], log: Path) -> None:
    """Polls ready() until it holds; raises naming `what`, with the tail of its log, if it never does."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while not ready():
        if not alive():
            raise LabError(f"{what} exited before it was ready; tail of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{what} did not come up within {START_TIMEOUT:.0f} s; tail of {log}:\n{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _group_alive(pgid: int) -> bool:
    """True while a process other than a zombie is in the group (a container's init may never reap)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stops a process started with start_new_session=True and everything it forked.

    SIGINT first: php -S then reaps its workers itself; on SIGTERM it dies and leaves them to init.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.01)
    raise LabError(f"process group {process.pid} ({' '.join(map(str, process.args))}) survived SIGKILL")


def _php_literal(value: Constant) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise LabError(f"constant value {value!r} is not a str, bool or int")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy


def _http_status(url: str) -> int | None:
    """The status of a GET, or None while nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


# --- sites ------------------------------------------------------------------------------------------------

class Site:
    """One WordPress site of a Lab: its tree, database, wp-config.php and php -S web server."""

    def __init__(self, lab: Lab, name: str, port: int, constants: dict[str, Constant]) -> None:
        self.name, self.port, self.url = name, port, f"http://{LOOPBACK}:{port}"
        self.path = lab.base_dir / "sites" / name
        self.database = f"wp_{name}"
        self.admin_login, self.admin_password = ADMIN_LOGIN, secrets.token_urlsafe(12)
        self.constants: dict[str, Constant] = dict(constants)  # extra ones, over the lab's defaults
        self.debug_log = lab.log_dir / f"{name}-debug.log"
        self.server_log = lab.log_dir / f"{name}-server.log"
        self._lab = lab
        self._salts = {key: secrets.token_urlsafe(48) for key in SALTS}
        self._server: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Site(name={self.name!r}, url={self.url!r}, path='{self.path}')"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def rest_url(self, route: str) -> str:
        return f"{self.url}/wp-json/{route.lstrip('/')}"

    def php(self, code: str, before_load: str = "") -> str:
        """Runs PHP statements (no opening tag) after wp-load.php, as no user; returns stdout.

        Errors and notices go to stderr, never into stdout; a non-zero exit raises PhpError with stderr
        and what this run added to the site's debug log.
        """
        server = {"HTTP_HOST": f"{LOOPBACK}:{self.port}", "SERVER_NAME": LOOPBACK, "SERVER_PORT": str(self.port),
                  "REQUEST_URI": "/", "REQUEST_METHOD": "GET", "REMOTE_ADDR": LOOPBACK}
        script = (f"<?php\n$_SERVER = array_merge($_SERVER, json_decode({_php_literal(json.dumps(server))}, true));\n"
                  f"{before_load}\nrequire {_php_literal(str(self.path / 'wp-load.php'))};\n"
                  # WP_DEBUG_DISPLAY false switched display off; send it to stderr for this run.
                  "ini_set('display_errors', 'stderr'); error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED);\n"
                  f"{code}\n")
        log_size = self.debug_log.stat().st_size if self.debug_log.exists() else 0
        try:
            done = subprocess.run(["php", "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL & ~E_DEPRECATED"],
                                  input=script.encode(), capture_output=True, cwd=self.path, timeout=PHP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise PhpError(f"PHP in site {self.name!r} ran longer than {PHP_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise PhpError(f"PHP in site {self.name!r} exited {done.returncode}; stderr:\n"
                           f"{done.stderr.decode(errors='replace')[-3000:] or '(empty)'}\n"
                           f"new in {self.debug_log}:\n{_tail(self.debug_log, offset=log_size)}")
        return done.stdout.decode(errors="replace")

    def php_json(self, code: str) -> Any:
        """Runs PHP statements that echo one JSON document; returns it decoded (stray lines before it are ignored)."""
        out = self.php(code).strip()
        for candidate in (out, *reversed(out.splitlines())):
            try:
                return json.loads(candidate)
            except json.JSONDecodeError:
                continue
        raise PhpError(f"PHP in site {self.name!r} printed no JSON; stdout:\n{out[-2000:] or '(empty)'}")

    def db_query(self, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL on the site's database; returns the rows of the last result set (SQL NULL as None)."""
        return self._lab.db_query(self.database, sql)

    def wp_insert_user_rate(self, count: int) -> float:
        """Creates `count` users with wp_insert_user() in one PHP process; returns users/s, then deletes them.

        Active plugins' hooks run too, so this is the baseline of this site as configured.
        """
        result = self.php_json(f"""require_once ABSPATH . 'wp-admin/includes/user.php';
            $run = bin2hex(random_bytes(4)); $ids = []; $started = microtime(true);
            for ($i = 0; $i < {int(count)}; $i++) {{
                $id = wp_insert_user(['user_login' => "wplab_rate_{{$run}}_$i",
                    'user_email' => "wplab_rate_{{$run}}_$i@example.test", 'user_pass' => "pw-$run-$i"]);
                if (is_wp_error($id)) {{ fwrite(STDERR, $id->get_error_message()); exit(1); }}
                $ids[] = $id;
            }}
            $elapsed = microtime(true) - $started;
            foreach ($ids as $id) {{ wp_delete_user($id); }}
            echo json_encode(['elapsed' => $elapsed]);""")
        return count / max(float(result["elapsed"]), 1e-9)

    def _write_config(self) -> None:
        defaults: dict[str, Constant] = {
            "DB_NAME": self.database, "DB_USER": "root", "DB_PASSWORD": "", "DB_CHARSET": "utf8mb4",
            "DB_COLLATE": "", "DB_HOST": f"localhost:{self._lab.db_socket}",
            "WP_HOME": self.url, "WP_SITEURL": self.url, "WP_ENVIRONMENT_TYPE": "local",
            "WP_HTTP_BLOCK_EXTERNAL": True, "WP_ACCESSIBLE_HOSTS": "localhost,127.0.0.1",
            "DISABLE_WP_CRON": True, "AUTOMATIC_UPDATER_DISABLED": True,
            "WP_DEBUG": True, "WP_DEBUG_LOG": str(self.debug_log), "WP_DEBUG_DISPLAY": False, **self._salts}
        lines = ["<?php", f"// Written by tests/e2e/wplab.py for lab site {self.name!r}; Site.set_constants() rewrites it."]
        for name, value in (defaults | self.constants).items():
            if not CONSTANT_NAME.match(name):
                raise LabError(f"site {self.name!r}: {name!r} is not a PHP constant name")
            lines.append(f"define('{name}', {_php_literal(value)});")
        lines += ["$table_prefix = 'wp_';", "if ( ! defined( 'ABSPATH' ) ) { define( 'ABSPATH', __DIR__ . '/' ); }",
                  "require_once ABSPATH . 'wp-settings.php';", ""]
        (self.path / "wp-config.php").write_text("\n".join(lines))

    def set_constants(self, constants: dict[str, Constant | None]) -> None:
        """Merges constants into wp-config.php (None removes one) and restarts a running web server.

        The restart is what makes the next request see them: php -S keeps compiled files for ~2 s.
        """
        for name, value in constants.items():
            if value is None:
                self.constants.pop(name, None)
            else:
                self.constants[name] = value
        self._write_config()
        if self.running:
            self.stop()
            self.start()

    def start(self) -> None:
        """Starts php -S on 127.0.0.1:port and waits until GET /wp-json/ answers 200; no-op if running."""
        if self.running:
            return
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, self.port)) == 0:
                raise LabError(f"site {self.name!r}: port {self.port} on {LOOPBACK} is already in use")
        with self.server_log.open("ab") as log:
            self._server = subprocess.Popen(
                ["php", "-S", f"{LOOPBACK}:{self.port}", "-t", str(self.path)], cwd=self.path,
                env=dict(os.environ, PHP_CLI_SERVER_WORKERS=SERVER_WORKERS), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True)
        try:
            _wait_until(f"web server of site {self.name!r} ({self.url})",
                        lambda: _http_status(self.rest_url("")) is not None, lambda: self.running, self.server_log)
            status = _http_status(self.rest_url(""))
            if status != 200:
                raise LabError(f"site {self.name!r}: GET {self.rest_url('')} answered {status}; "
                               f"tail of {self.debug_log}:\n{_tail(self.debug_log)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the web server with all its workers (its process group); the database stays up."""
        if self._server is not None:
            _stop_group(self._server)
            self._server = None


# --- the lab ----------------------------------------------------------------------------------------------

class Lab:
    """One private MariaDB plus WordPress sites under base_dir; as a context manager it always cleans up."""

    def __init__(self, base_dir: Path | str | None = None, keep: bool = False) -> None:
        self.base_dir = Path(base_dir).absolute() if base_dir else Path(tempfile.mkdtemp(prefix="wplab-"))
        self.keep = keep
        self.sites: dict[str, Site] = {}
        self.log_dir = self.base_dir / "logs"
        self.db_dir = self.base_dir / "mariadb"
        self.db_log = self.log_dir / "mariadb.log"
        self.db_socket = self.db_dir / "mariadb.sock"
        self._socket_dir: Path | None = None  # a short one in /tmp when base_dir is too deep
        self._db: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _prepare_base_dir(self) -> None:
        if self.base_dir.exists() and any(self.base_dir.iterdir()):
            if not (self.base_dir / LAB_MARKER).exists():
                raise LabError(f"refusing to use {self.base_dir}: not empty and not a wplab directory")
            shutil.rmtree(self.base_dir)  # left over from a run that was killed
        for folder in (self.log_dir, self.db_dir / "data", self.base_dir / "sites"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.base_dir / LAB_MARKER).write_text("made by tests/e2e/wplab.py; removed on close\n")
        if len(str(self.db_socket)) > SOCKET_PATH_MAX:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="wplab-sock-"))
            self.db_socket = self._socket_dir / "mariadb.sock"

    def start(self) -> None:
        """Creates the base directory and starts the private MariaDB; no-op if started."""
        if self._db is not None:
            return
        self._prepare_base_dir()
        data, config = self.db_dir / "data", self.db_dir / "my.cnf"
        install = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
                                  "--auth-root-authentication-method=normal", "--skip-test-db"],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if install.returncode != 0:
            raise LabError(f"mariadb-install-db failed (exit {install.returncode}):\n{install.stderr[-2000:]}")
        config.write_text("\n".join([
            "[mysqld]", f"datadir={data}", f"socket={self.db_socket}", f"pid-file={self.db_dir}/mariadbd.pid",
            f"log-error={self.db_log}", f"tmpdir={self.db_dir}", "user=root", "skip-networking", "skip-log-bin",
            "innodb_flush_log_at_trx_commit=2", "innodb_buffer_pool_size=64M", ""]))
        self._db = subprocess.Popen(["mariadbd", f"--defaults-file={config}"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ping = ["mariadb-admin", "--no-defaults", f"--socket={self.db_socket}", "--user=root", "ping"]
        _wait_until("MariaDB", lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                    lambda: self._db is not None and self._db.poll() is None, self.db_log)

    def db_query(self, database: str, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL with the mariadb client; returns the rows of the last result set (SQL NULL as None)."""
        done = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.db_socket}", "--user=root", "--xml",
                               f"--database={database}", f"--execute={sql}"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = (done.stderr.strip() or "no output").splitlines()[-1]
            raise LabError(f"SQL on database {database!r} failed: {reason}\nSQL: {sql}")
        body = re.sub(r"<\?xml[^>]*\?>", "", done.stdout).strip()
        result_sets = ElementTree.fromstring(f"<all>{body}</all>").findall("resultset")
        nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
        return [{field.get("name", ""): None if field.get(nil) == "true" else (field.text or "")
                 for field in row.findall("field")} for row in (result_sets[-1] if result_sets else [])]

    def add_site(self, name: str, port: int, constants: dict[str, Constant] | None = None,
                 plugins: list[str] | None = None, plugin_dirs: dict[str, Path | str] | None = None) -> Site:
        """Installs a WordPress site, activates its plugins and serves it on 127.0.0.1:port.

        constants: extra wp-config.php constants (they override the lab's defaults).
        plugins: plugin files already in wp-content/plugins to activate, e.g. 'akismet/akismet.php'.
        plugin_dirs: name -> directory, symlinked as wp-content/plugins/<name> and activated.
        """
        if self._db is None:
            raise LabError("the lab is not started: use `with Lab() as lab:` or call lab.start()")
        if not SITE_NAME.match(name):
            raise LabError(f"site name {name!r} does not match {SITE_NAME.pattern}")
        if name in self.sites or any(site.port == port for site in self.sites.values()):
            raise LabError(f"site {name!r} on port {port}: that name or port is already in the lab")
        if not 1024 <= port <= 65535:
            raise LabError(f"site {name!r}: port {port} is not between 1024 and 65535")
        site = Site(self, name, port, constants or {})
        self.sites[name] = site  # registered before anything starts, so close() stops it
        self.db_query("mysql", f"CREATE DATABASE `{site.database}` CHARACTER SET utf8mb4")
        subprocess.run(["cp", "-rL", str(WORDPRESS_SOURCE), str(site.path)], check=True)  # -L: Debian's symlinks
        (site.path / "wp-config.php").unlink()  # Debian's picks a config by host name: two sites collide
        site._write_config()
        site.php("require_once ABSPATH . 'wp-admin/includes/upgrade.php';\n"
                 f"wp_install('UserRelay lab {name}', {_php_literal(ADMIN_LOGIN)}, {_php_literal(ADMIN_EMAIL)}, "
                 f"true, '', {_php_literal(site.admin_password)});\n"
                 "global $wp_rewrite; $wp_rewrite->set_permalink_structure('/%postname%/'); $wp_rewrite->flush_rules(false);",
                 before_load="define('WP_INSTALLING', true);")
        to_activate = list(plugins or [])
        to_activate += [self._link_plugin(site, plugin, Path(source)) for plugin, source in (plugin_dirs or {}).items()]
        if to_activate:
            site.php(self._activation_code(to_activate))
        site.start()
        return site

    @staticmethod
    def _activation_code(plugin_files: list[str]) -> str:
        # activate_plugin() runs the plugin's activation hook, as wp-admin does.
        return ("require_once ABSPATH . 'wp-admin/includes/plugin.php';\n"
                f"foreach (json_decode({_php_literal(json.dumps(plugin_files))}) as $file) {{\n"
                "  $result = activate_plugin($file);\n"
                "  if (is_wp_error($result)) { fwrite(STDERR, \"cannot activate $file: \" . $result->get_error_message()); exit(1); }\n"
                "}")

    @staticmethod
    def _link_plugin(site: Site, name: str, source: Path) -> str:
        """Symlinks a plugin directory into the site; returns its main file as 'name/file.php'."""
        source = source.absolute()
        main = source / f"{name}.php"
        if not main.is_file():
            headed = [path for path in sorted(source.glob("*.php"))
                      if "Plugin Name:" in path.read_text(errors="replace")[:8192]]
            if not headed:
                raise LabError(f"plugin dir {source} has no {name}.php and no .php file with a Plugin Name header")
            main = headed[0]
        (site.path / "wp-content" / "plugins" / name).symlink_to(source, target_is_directory=True)
        return f"{name}/{main.name}"

    def close(self) -> None:
        """Stops every web server, then MariaDB, then removes base_dir unless keep; safe after any failure."""
        errors: list[str] = []
        for site in self.sites.values():
            try:
                site.stop()
            except Exception as error:  # keep going: the others must stop too
                errors.append(f"site {site.name!r}: {error}")
        if self._db is not None:
            self._db.terminate()  # mariadbd shuts down cleanly on SIGTERM
            try:
                self._db.wait(timeout=3 * STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                errors.append(f"MariaDB (pid {self._db.pid}) ignored SIGTERM for {3 * STOP_TIMEOUT:.0f} s")
                self._db.kill()
                self._db.wait()
            self._db = None
        if not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if errors:
            raise LabError("the lab did not stop cleanly: " + "; ".join(errors))


# --- command line -----------------------------------------------------------------------------------------

def _up(args: argparse.Namespace) -> int:
    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop_on_term)
    wanted = [(name, port) for name, _, port in (item.partition(":") for item in args.sites.split(","))]
    if not all(name and port.isdigit() for name, port in wanted):
        print(f"--sites {args.sites!r}: expected NAME:PORT,NAME:PORT", file=sys.stderr)
        return 2
    reason = ensure_packages()
    if reason:
        print(f"cannot run WordPress here: {reason}", file=sys.stderr)
        return 1
    try:
        with Lab(args.dir, keep=args.keep) as lab:
            for name, port in wanted:
                site = lab.add_site(name, int(port), plugin_dirs={Path(p).name: Path(p) for p in args.plugin})
                print(f"{site.name}: {site.url}/wp-admin/  login {site.admin_login}  password {site.admin_password}",
                      flush=True)
            print(f"lab in {lab.base_dir} (logs in {lab.log_dir}); Ctrl-C or SIGTERM stops it", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.wplab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="say whether WordPress can run here (installs packages as root)")
    up = commands.add_parser("up", help="bring sites up until Ctrl-C or SIGTERM, then tear them down")
    up.add_argument("--dir", default="var/demo", help="lab directory, removed on stop (default: var/demo)")
    up.add_argument("--sites", default="a:8081,b:8082", help="NAME:PORT,... (default: a:8081,b:8082)")
    up.add_argument("--plugin", action="append", default=[], help="plugin directory to link and activate")
    up.add_argument("--keep", action="store_true", help="keep the lab directory after stopping")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    reason = ensure_packages()
    print(f"cannot run WordPress here: {reason}" if reason else f"ready: WordPress {wordpress_version()} can run here")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
