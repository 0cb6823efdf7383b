"""A site as people run it: WordPress 6.8 under PHP-FPM behind nginx over HTTPS.

Site b runs WordPress 6.8 from php-fpm behind nginx at https://localhost:PORT, its certificate
signed by a CA this module makes; the relay verifies it against that CA (the site's ca_file,
never with verification off), and b's plugin sends to the relay over HTTPS through nginx in
front of it, trusting the same CA. Site a stays on php -S, as the other scenarios run.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab_packages import ensure_packages
from tests.e2e.test_sync import arrives, can_log_in, create, unique
from tests.e2e.webstack import WEB_PACKAGES, Stack, proxy_over_https, serve_over_https
from tests.e2e.world import World, build_world, free_port
from tests.tlslab import LocalCA

pytestmark = pytest.mark.wordpress


class FpmWorld:
    def __init__(self, world: World, site_stack: Stack, ca: LocalCA) -> None:
        self.world, self.site_stack, self.ca = world, site_stack, ca


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FpmWorld]:
    reason = ensure_packages() or ensure_packages(WEB_PACKAGES)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PHP-FPM suite, but: {reason}")
        pytest.skip(f"PHP-FPM and nginx cannot run here: {reason}")
    base = tmp_path_factory.mktemp("fpm")
    ca = LocalCA(base / "ca")
    with build_world(base, releases=(None, "6.8")) as world:
        relay_port, site_port = free_port(), free_port()
        relay_proxy = proxy_over_https(base, world.lab.log_dir, ca, relay_port, world.relay.url)
        try:
            world.b.set_constants({"USERRELAY_URL": f"https://localhost:{relay_port}"})
            site_stack = serve_over_https(world.b, ca, site_port)
            try:
                world.relay.ca_files["b"] = ca.cert
                world.link("bidirectional")
                yield FpmWorld(world, site_stack, ca)
            finally:
                site_stack.stop()
        finally:
            relay_proxy.stop()


def test_the_relay_verifies_the_https_site_against_its_ca_file(fpm: FpmWorld) -> None:
    report = json.loads(fpm.world.admin("sites", "test", "b", "--json"))

    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"]
    assert checks["tls"]["detail"].startswith(
        f"the certificate of localhost is trusted (the authorities of {fpm.ca.cert})")
    assert checks["relay_check"]["status"] == "ok"  # b's plugin reached the relay over https


def test_the_fpm_sites_own_php_processes_know_its_https_address(fpm: FpmWorld) -> None:
    """wp-config.php's WP_HOME overrides the option: a PHP process of the site (a cron run, a
    change made from the command line) kicks its sends at home_url(), the address that serves
    it (class-userrelay-loopback-kick.php)."""
    b = fpm.world.b
    home = b.php_json("echo json_encode(home_url());")

    assert b.url == home and b.url.startswith("https://")


def test_a_change_on_the_php_s_site_reaches_the_fpm_site(fpm: FpmWorld) -> None:
    world = fpm.world
    login, email = unique("tofpm")

    create(world.a, login, email, password="fpm-Pass-1", first_name="Over TLS")

    arrives(world.b, email, lambda u: u["first_name"] == "Over TLS")
    assert can_log_in(world.b, login, "fpm-Pass-1")


def test_a_change_made_in_a_request_under_fpm_is_sent_after_the_answer(fpm: FpmWorld) -> None:
    """The background send under FPM: fastcgi_finish_request() ends the visitor's request,
    then the same PHP worker sends the outbox; no loopback request to the flush route."""
    world = fpm.world
    login, email = unique("fromfpm")
    password, _ = world.b.php_json(
        "echo json_encode(WP_Application_Passwords::create_new_application_password("
        "1, ['name' => 'lab ' . wp_generate_password(6, false)]));")
    flushes_before = loopback_flushes(fpm)

    status, answer = rest(fpm, "POST", "/wp-json/wp/v2/users", password, {
        "username": login, "email": email, "password": "fpm-Pass-2", "roles": ["author"],
        "first_name": "From FPM"})

    assert 201 == status, answer
    there = arrives(world.a, email, lambda u: u["first_name"] == "From FPM")
    assert ["author"] == there["roles"]
    assert can_log_in(world.a, login, "fpm-Pass-2")
    assert flushes_before == loopback_flushes(fpm)


def loopback_flushes(fpm: FpmWorld) -> int:
    """Requests of the site to itself to send its outbox (the flush route, or the kick: a POST
    to the home page) seen by nginx."""
    log = fpm.site_stack.access_log.read_text()
    return log.count("/userrelay/v1/flush") + log.count('"POST / HTTP')


def rest(fpm: FpmWorld, method: str, path: str, app_password: str,
         body: dict[str, Any]) -> tuple[int, Any]:
    """A REST call to site b as its admin, with an application password, over https."""
    credentials = base64.b64encode(f"admin:{app_password}".encode()).decode()
    request = urllib.request.Request(
        fpm.world.b.url + path, data=json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(fpm.ca.cert))
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")[:2000]
