"""The lab's WordPress sites: one ``Site`` per site of a Lab (tests/e2e/wplab.py).

A site is a copy of Debian's WordPress tree with a plain wp-config.php of its own (offline, no
WP-Cron, debug log under the lab's logs), served by ``php -S 127.0.0.1:PORT`` with four workers
in a session of its own (stopped by process group), optionally with its PHP clock off
(libfaketime). It runs PHP in the site's context (``php()``) and SQL on the site's database.
It must not listen beyond 127.0.0.1 or touch anything outside the lab's directory.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.e2e.lab_processes import LabError, http_status, log_tail, stop_group, wait_until_up

if TYPE_CHECKING:
    from tests.e2e.wplab import Lab

LOOPBACK = "127.0.0.1"
ADMIN_LOGIN, ADMIN_EMAIL = "admin", "admin@example.test"
SERVER_WORKERS = "4"  # a single-worker php -S deadlocks when WordPress calls itself
PHP_TIMEOUT = 300.0  # s for one php() run
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


class PhpError(LabError):
    """PHP run in a site's context exited non-zero, or did not print the expected JSON."""



def php_literal(value: Constant) -> str:
    """A PHP literal of a wp-config.php constant's value."""
    if isinstance(value, bool | int):
        return str(value).lower()  # True -> true, 42 -> 42
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        """``command`` with this site's clock offset: libfaketime preloaded with a relative
        offset, through ``env`` rather than the ``faketime`` wrapper, whose shared-memory
        files outlive a server stopped by a signal and make a later wrapper with the same
        process id fail ("sem_open: File exists")."""
        if not self.clock_offset:
            return command
        return ["env", f"LD_PRELOAD={libfaketime()}", f"FAKETIME={self.clock_offset:+d}",
                *command]

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def server_pid(self) -> int | None:
        """The php -S server's pid (its session: its workers run in it too), when running."""
        return self._server.pid if self.running and self._server is not None else None

    def php(self, code: str, before_load: str = "") -> str:
        """Runs PHP statements (no opening tag) after wp-load.php, as no user; returns stdout.
        PHP errors go to stderr; a non-zero exit raises PhpError with it and the debug log."""
        script = (
            f"<?php\n$_SERVER = ['HTTP_HOST' => '{LOOPBACK}:{self.port}', 'REQUEST_URI' => '/', "
            f"'SERVER_NAME' => '{LOOPBACK}', 'SERVER_PORT' => '{self.port}', "
            f"'REQUEST_METHOD' => 'GET', 'REMOTE_ADDR' => '{LOOPBACK}'] + $_SERVER;\n"
            # A script read from stdin gets no STDERR constant; code may want it.
            "define('STDERR', fopen('php://stderr', 'w'));\n"
            f"{before_load}\nrequire {php_literal(str(self.path / 'wp-load.php'))};\n"
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
                           f"\nnew in {self.debug_log}:\n{log_tail(self.debug_log, log_size)}")
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
        lines = ["<?php", f"// Lab site {self.name!r}: written by tests/e2e/lab_site.py."]
        for name, value in (defaults | self.constants).items():
            if not CONSTANT_NAME.match(name):
                raise LabError(f"site {self.name!r}: {name!r} is not a PHP constant name")
            lines.append(f"define('{name}', {php_literal(value)});")
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
        if http_status(index) is not None:  # else we would take another server's answer as ours
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
            wait_until_up(f"web server of site {self.name!r} ({self.url})",
                        lambda: http_status(index) is not None, lambda: self.running,
                        self.server_log)
            if (status := http_status(index)) != 200:
                raise LabError(f"site {self.name!r}: GET {index} answered {status}; "
                               f"tail of {self.debug_log}:\n{log_tail(self.debug_log)}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the web server with all its workers; the database stays up."""
        if self._server is not None:
            stop_group(self._server, signal.SIGINT)
            self._server = None


def libfaketime() -> str:
    """Debian's libfaketime, wherever this machine's architecture keeps it."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise LabError("libfaketime.so.1 is missing; install Debian's faketime package")
    return found[0]
