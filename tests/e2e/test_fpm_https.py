"""A site as people run it: WordPress 6.8 under PHP-FPM behind nginx over HTTPS.

Site b runs WordPress 6.8 from php-fpm behind nginx at https://localhost:PORT, its certificate
signed by a CA this module makes; the relay verifies it against that CA (the site's ca_file,
never with verification off), and b's plugin sends to the relay over HTTPS through nginx in
front of it, trusting the same CA. Site a stays on php -S, as the other scenarios run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab_packages import ensure_packages
from tests.e2e.lab_site import Site
from tests.e2e.test_sync import arrives, can_log_in, create, unique
from tests.e2e.webstack import (
    SYSTEM_BUNDLE,
    WEB_PACKAGES,
    Stack,
    proxy_over_https,
    serve_over_https,
)
from tests.e2e.world import World, build_world, free_port, outbox, user, wait_until
from tests.tlslab import LocalCA

pytestmark = pytest.mark.wordpress


class FpmWorld:
    site_stack: Stack  # site b's php-fpm and nginx

    def __init__(self, world: World, ca: LocalCA, base: Path, relay_port: int,
                 relay_proxy: Stack) -> None:
        self.world, self.ca = world, ca
        self.base, self.relay_port, self.relay_proxy = base, relay_port, relay_proxy

    @property
    def bundle(self) -> Path:
        """The CA bundle site b's WordPress verifies with (the system's and the lab's CA)."""
        return self.site_stack.folder / "ca-bundle.crt"

    def serve_relay_with(self, ca: LocalCA, name: str) -> None:
        """The relay's nginx again at the same address, with a certificate signed by ``ca``."""
        self.relay_proxy.stop()
        self.relay_proxy = proxy_over_https(self.base, self.world.lab.log_dir, ca,
                                            self.relay_port, self.world.relay.url, name)


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
        fpm = FpmWorld(world, ca, base, relay_port, proxy_over_https(
            base, world.lab.log_dir, ca, relay_port, world.relay.url))
        try:
            world.b.set_constants({"USERRELAY_URL": f"https://localhost:{relay_port}"})
            fpm.site_stack = serve_over_https(world.b, ca, site_port)
            try:
                world.relay.ca_files["b"] = ca.cert
                world.link("bidirectional")
                yield fpm
            finally:
                fpm.site_stack.stop()
        finally:
            fpm.relay_proxy.stop()


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


# The relay's trust anchor (class-userrelay-relay-trust.php): cURL parses the whole CA bundle a
# request is given, every time (about 25 ms of CPU a send, docs/performance.md), so the plugin
# verifies the relay against the one authority of the site's own bundle its chain leads to.

def test_the_plugin_verifies_the_relay_against_its_authority_in_the_sites_own_bundle(
        fpm: FpmWorld) -> None:
    probe_ca_file(fpm)  # b has talked to the relay over https: its anchor is learned
    learned = anchor(fpm)

    assert fingerprints(Path(learned["file"]).read_text()) == fingerprints(fpm.ca.cert.read_text())
    assert f"|{fpm.bundle}|" in learned["for"]  # learned from that bundle, for that relay
    assert learned["for"].startswith(f"localhost:{fpm.relay_port}|")
    assert learned["file"] == probe_ca_file(fpm)  # the next request trusts only it


def test_an_anchor_file_changed_on_disk_is_not_trusted_and_is_learned_again(fpm: FpmWorld) -> None:
    probe_ca_file(fpm)
    learned = anchor(fpm)
    other = LocalCA(fpm.base / "tampered", name="Not the relay's CA")
    Path(learned["file"]).write_text(other.cert.read_text())

    assert str(fpm.bundle) == probe_ca_file(fpm)  # the whole bundle, then learned again
    assert learned["file"] == probe_ca_file(fpm)
    assert fingerprints(Path(learned["file"]).read_text()) == fingerprints(fpm.ca.cert.read_text())


def test_when_the_relay_moves_to_another_authority_the_send_falls_back_to_the_bundle_at_once(
        fpm: FpmWorld) -> None:
    world, original = fpm.world, fpm.bundle.read_text()
    second = LocalCA(fpm.base / "second-ca", name="UserRelay second test CA")
    fpm.bundle.write_text(original + "\n" + second.cert.read_text())  # the site trusts both
    try:
        probe_ca_file(fpm)  # a changed bundle is learned from again: still the first CA
        assert fingerprints(anchor_text(fpm)) == fingerprints(fpm.ca.cert.read_text())
        fpm.serve_relay_with(second, "relay-second-ca")
        login, email = unique("movedca")

        create(world.b, login, email, first_name="Moved CA")

        arrives(world.a, email, lambda u: u["first_name"] == "Moved CA")
        assert fingerprints(anchor_text(fpm)) == fingerprints(second.cert.read_text())
        assert 0 == outbox(world.b)
    finally:
        fpm.serve_relay_with(fpm.ca, "relay")
        fpm.bundle.write_text(original)


def test_an_authority_removed_from_the_sites_bundle_is_not_trusted_through_the_anchor(
        fpm: FpmWorld) -> None:
    world, original = fpm.world, fpm.bundle.read_text()
    probe_ca_file(fpm)
    assert fingerprints(anchor_text(fpm)) == fingerprints(fpm.ca.cert.read_text())
    fpm.bundle.write_text(Path(SYSTEM_BUNDLE).read_text())  # the site no longer trusts the CA
    login, email = unique("distrusted")
    try:
        create(world.b, login, email, first_name="Never over an untrusted CA")

        wait_until("b's send is refused", lambda: attempts(world.b) >= 1, timeout=30)
        assert user(world.a, email) is None
        assert "certificate" in str(world.b.php_json(
            "echo json_encode(get_option('userrelay_status'));")).lower()
    finally:
        fpm.bundle.write_text(original)
    world.b.php("global $wpdb; $wpdb->query(\"UPDATE {$wpdb->prefix}userrelay_outbox "
                "SET next_attempt_at = 0\"); UserRelay_Plugin::outbox()->flush();")
    arrives(world.a, email)  # kept in the outbox, sent once trusted again


def anchor(fpm: FpmWorld) -> dict[str, Any]:
    """What b's plugin learned of the relay's trust anchor (its option)."""
    learned = fpm.world.b.php_json("echo json_encode(get_option('userrelay_relay_trust'));")
    assert isinstance(learned, dict) and "file" in learned, learned
    return learned


def anchor_text(fpm: FpmWorld) -> str:
    return Path(anchor(fpm)["file"]).read_text()


def probe_ca_file(fpm: FpmWorld) -> str:
    """The CA file b's plugin gave its last request to the relay, a signed ping."""
    used = fpm.world.b.php_json(
        "$used = null; add_action('http_api_debug', function ($r, $c, $k, $args) use (&$used) {"
        " $used = $args['sslcertificates']; }, 10, 4);"
        "$answer = (new UserRelay_Relay_Client(new UserRelay_Settings()))->probe();"
        "if (200 !== $answer['status']) { fwrite(STDERR, print_r($answer, true)); exit(1); }"
        "echo json_encode($used);")
    return str(used)


def fingerprints(pem: str) -> set[str]:
    """The SHA-256 fingerprints of the certificates in a PEM text."""
    marker = "-----END CERTIFICATE-----"
    return {hashlib.sha256(ssl.PEM_cert_to_DER_cert(part.strip() + "\n" + marker + "\n"))
            .hexdigest() for part in pem.split(marker) if "BEGIN CERTIFICATE" in part}


def attempts(site: Site) -> int:
    rows = site.db_query("SELECT MAX(attempts) AS n FROM wp_userrelay_outbox")
    return int(rows[0]["n"] or 0)
