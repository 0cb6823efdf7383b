"""Real WordPress sites on loopback for the end-to-end suite and the demo.

Owns the lab: one private MariaDB (socket only, lab_mariadb.py) and WordPress sites copied from
Debian's package (lab_site.py), installed headlessly, each served by its own
``php -S 127.0.0.1:PORT`` with four workers; and its command line (``check``: the packages,
lab_packages.py; ``up``). Every process it starts runs in its own session and is stopped by PID
or process group (lab_processes.py). It must not touch the system MariaDB, /etc/wordpress or
anything outside its base directory (ensure_packages() aside), register anything global, or
listen beyond 127.0.0.1. Usage: tests/e2e/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.e2e import wpreleases
from tests.e2e.lab_mariadb import MariaDB
from tests.e2e.lab_packages import ensure_packages as ensure_packages  # for bench/, below
from tests.e2e.lab_processes import LabError as LabError  # for bench/, below
from tests.e2e.lab_site import (
    ADMIN_EMAIL,
    ADMIN_LOGIN,
    LOOPBACK,
    ROUTER,
    ROUTER_FILE,
    Constant,
    php_literal,
)
from tests.e2e.lab_site import Site as Site  # for bench/, below

# Site, LabError and ensure_packages live in the lab_*.py modules; bench/ and
# tests/e2e/test_console.py still import them from here, with the Lab.

SITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class Lab:
    """A private MariaDB plus WordPress sites under base_dir; as a context manager it cleans up."""

    def __init__(self, base_dir: Path | str | None = None, keep: bool = False) -> None:
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="wplab-")).absolute()
        self.keep, self._owns_dir = keep, base_dir is None  # close() removes only a dir it filled
        self.sites: dict[str, Site] = {}
        self.log_dir, self.db_dir = self.base_dir / "logs", self.base_dir / "mariadb"
        self.db_log = self.log_dir / "mariadb.log"
        self.mariadb = MariaDB(self.db_dir, self.db_log)
        self.db_socket = self.mariadb.socket

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
        if self.mariadb.running:
            return
        if self.base_dir.exists() and any(self.base_dir.iterdir()):
            raise LabError(f"lab directory {self.base_dir} is not empty: remove it first")
        self._owns_dir = True
        for folder in (self.log_dir, self.db_dir, self.base_dir / "sites"):
            folder.mkdir(parents=True, exist_ok=True)
        self.mariadb.start()

    def db_query(self, database: str, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL with the mariadb client; returns the rows of all result sets (NULL as None)."""
        return self.mariadb.query(database, sql)

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
        if not self.mariadb.running:
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
                 f"{php_literal(site.admin_password)});\n"
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
                     f"foreach (json_decode({php_literal(json.dumps(to_activate))}) as $file) {{\n"
                     "  if (is_wp_error($result = activate_plugin($file, '', "
                     f"{php_literal(site.network)}))) {{\n"
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
            f"foreach (json_decode({php_literal(json.dumps(subsites))}) as $path) {{\n"
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
        if (pid := self.mariadb.pid) is not None:
            try:
                self.mariadb.stop()
            except Exception as error:  # noqa: BLE001 - reported with the others
                errors.append(f"MariaDB (pid {pid}): {error}")
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
