"""The usual web stack for a lab site: PHP-FPM behind nginx over HTTPS, with a lab CA.

``serve_over_https(site, ca, port)`` moves a running lab site from ``php -S`` to Debian's
php-fpm (a pool of its own on a Unix socket under the lab) behind nginx (a server of its own,
``https://localhost:PORT``, a certificate from the lab's CA), and makes WordPress's own HTTP
client trust that CA. ``proxy_over_https(lab_dir, ca, port, upstream)`` puts nginx with TLS in
front of a plain-http service (the relay), as docs/operations.md does. Each process runs in its
own session, in the foreground, and is stopped by its process group; nothing listens beyond
127.0.0.1 and no system service is touched. Packages: ``php-fpm`` and ``nginx``
(``lab_packages.ensure_packages(WEB_PACKAGES)``).
"""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.lab_processes import LabError, log_tail, stop_group, wait_until_up
from tests.e2e.lab_site import Site
from tests.tlslab import LocalCA

WEB_PACKAGES = ["php-fpm", "nginx"]
HOST = "localhost"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FPM_CHILDREN = 4


def _fpm_binary() -> str:
    found = sorted(Path("/usr/sbin").glob("php-fpm*"))
    if not found:
        raise LabError("no /usr/sbin/php-fpm*: install Debian's php-fpm")
    return str(found[-1])


def _https_status(url: str, ca: LocalCA) -> int | None:
    context = ssl.create_default_context(cafile=str(ca.cert))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except OSError:
        return None


class Stack:
    """nginx (and php-fpm, for a site) of one lab server; ``stop()`` ends both."""

    def __init__(self, folder: Path, log_dir: Path, name: str) -> None:
        self.folder, self.name = folder, name
        folder.mkdir(parents=True, exist_ok=True)
        self.nginx_log = log_dir / f"{name}-nginx-error.log"
        self.access_log = log_dir / f"{name}-nginx-access.log"
        self.fpm_log = log_dir / f"{name}-fpm.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], log: Path, what: str) -> None:
        with log.open("ab") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=out, start_new_session=True)
        self.processes.append(process)
        if process.poll() is not None:
            raise LabError(f"{what} exited at once; tail of {log}:\n{log_tail(log)}")

    def nginx(self, server: str) -> None:
        temp = self.folder / "tmp"
        temp.mkdir(exist_ok=True)
        config = self.folder / "nginx.conf"
        config.write_text("\n".join([
            "user root;", "worker_processes 1;", "daemon off;",
            f"pid {self.folder}/nginx.pid;", f"error_log {self.nginx_log} info;",
            "events { worker_connections 256; }",
            "http {", "  include /etc/nginx/mime.types;",
            f"  access_log {self.access_log};",
            *(f"  {kind}_temp_path {temp}/{kind};"
              for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
            server, "}", ""]))
        self.start(["nginx", "-c", str(config), "-p", str(self.folder)], self.nginx_log,
                   f"nginx of {self.name}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            nginx = isinstance(process.args, list) and process.args[0] == "nginx"
            stop_group(process, signal.SIGQUIT if nginx else signal.SIGTERM)
        self.processes.clear()


def _server_block(port: int, cert: Path, key: Path, body: str) -> str:
    return "\n".join([
        "  server {", f"    listen 127.0.0.1:{port} ssl;", f"    server_name {HOST};",
        f"    ssl_certificate {cert};", f"    ssl_certificate_key {key};", body, "  }"])


def serve_over_https(site: Site, ca: LocalCA, port: int) -> Stack:
    """Serves ``site`` from php-fpm behind nginx at https://localhost:port instead of php -S;
    its home and siteurl become that address, and its WordPress trusts ``ca``."""
    lab_dir = site.path.parent.parent
    stack = Stack(lab_dir / "web" / site.name, site.debug_log.parent, site.name)
    site.stop()
    cert, key = ca.issue(site.name, [HOST, "127.0.0.1"])
    socket_path = stack.folder / "fpm.sock"
    fpm_config = stack.folder / "fpm.conf"
    fpm_config.write_text("\n".join([
        "[global]", f"pid = {stack.folder}/fpm.pid", f"error_log = {stack.fpm_log}",
        "daemonize = no", f"[{site.name}]", "user = root", "group = root",
        f"listen = {socket_path}", "listen.mode = 0600", "pm = static",
        f"pm.max_children = {FPM_CHILDREN}", "catch_workers_output = yes",
        "clear_env = no", "php_admin_value[display_errors] = off", ""]))
    url = f"https://{HOST}:{port}"
    try:
        # -R: the lab runs as root; the pool runs as root too, as php -S did.
        stack.start([_fpm_binary(), "-R", "-F", "-y", str(fpm_config)], stack.fpm_log,
                    f"php-fpm of {site.name}")
        wait_until_up(f"php-fpm of site {site.name}", socket_path.exists,
                      lambda: all(p.poll() is None for p in stack.processes), stack.fpm_log)
        stack.nginx(_server_block(port, cert, key, "\n".join([
            f"    root {site.path};", "    index index.php;",
            "    location / { try_files $uri $uri/ /index.php?$args; }",
            "    location ~ \\.php$ {",
            "      include /etc/nginx/fastcgi_params;",
            "      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;",
            f"      fastcgi_pass unix:{socket_path};", "    }"])))
        # WordPress's HTTP client (Debian's: the system's bundle) also trusts the lab's CA,
        # through a must-use plugin of the lab's, as a site behind a private CA would do.
        bundle = stack.folder / "ca-bundle.crt"
        bundle.write_text(Path(SYSTEM_BUNDLE).read_text() + "\n" + ca.cert.read_text())
        mu_plugins = site.path / "wp-content" / "mu-plugins"
        mu_plugins.mkdir(exist_ok=True)
        (mu_plugins / "lab-ca.php").write_text(
            "<?php\nadd_filter('http_request_args', function ($args) {\n"
            f"  $args['sslcertificates'] = '{bundle}';\n  return $args;\n}});\n")
        site.php(f"update_option('home', '{url}'); update_option('siteurl', '{url}');")
        site.url = url
        # wp-config.php's WP_HOME and WP_SITEURL follow too (they override the options): a
        # loopback kick from a PHP process of this site goes to nginx, not to the gone php -S.
        site.set_constants({})
        wait_until_up(f"nginx of site {site.name} ({url})",
                      lambda: _https_status(f"{url}/wp-json/", ca) == 200,
                      lambda: all(p.poll() is None for p in stack.processes), stack.nginx_log)
    except BaseException:
        stack.stop()
        raise
    return stack


def proxy_over_https(folder: Path, log_dir: Path, ca: LocalCA, port: int,
                     upstream: str, name: str = "relay") -> Stack:
    """nginx with TLS at https://localhost:port in front of ``upstream`` (http://host:port)."""
    stack = Stack(folder / "web" / name, log_dir, name)
    cert, key = ca.issue(name, [HOST, "127.0.0.1"])
    try:
        stack.nginx(_server_block(port, cert, key, "\n".join([
            "    location / {", f"      proxy_pass {upstream};",
            "      proxy_set_header Host $http_host;",
            "      proxy_set_header X-Forwarded-Proto https;", "    }"])))
        wait_until_up(f"nginx in front of {upstream}",
                      lambda: _https_status(f"https://{HOST}:{port}/healthz", ca) is not None,
                      lambda: all(p.poll() is None for p in stack.processes), stack.nginx_log)
    except BaseException:
        stack.stop()
        raise
    return stack


def have_web_stack() -> bool:
    return shutil.which("nginx") is not None and bool(sorted(Path("/usr/sbin").glob("php-fpm*")))
