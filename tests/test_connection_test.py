"""The connection test: each check against a stand-in plugin, and what it says when it fails."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from relay.config import Config
from relay.db.links import LinkBook
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.sites.connection_report import ConnectionReport, record
from relay.sites.connection_test import run_connection_test
from tests.partner import Partner
from tests.relay_settings import settings, site
from tests.support import Relay

PASSWORDS = ["create", "edit", "roles", "password"]


async def connection_test(config: Config, site_id: str) -> ConnectionReport:
    """Run the test of ``site_id`` as ``userrelay sites test`` does, and record it."""
    keys = KeyStore(config.database_path, config.master_key_path)
    try:
        with LinkBook(config) as book:
            report = await run_connection_test(config, site_id, keys, tests=book.site_tests(),
                                               timeout=5)
            record(book, report)
    finally:
        keys.close()
    return report


def outcome(report: ConnectionReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def only(report: ConnectionReport, name: str) -> Any:
    check = report.check(name)
    assert check is not None, f"no {name} check"
    return check


async def relay_with_b(two_sites: Any, **partner: Any) -> tuple[Relay, Partner]:
    relay, b = await two_sites(start_links=False)
    for field, value in partner.items():
        setattr(b, field, value)
    return relay, b


async def test_a_site_whose_plugin_answers_both_ways_passes_every_check(
        two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites)

    report = await connection_test(relay.config, "b")

    assert report.passed
    assert {"key": "ok", "dns": "ok", "tcp": "ok", "tls": "ok", "ping": "ok",
            "relay_check": "ok", "clock": "ok", "wordpress": "ok",
            "hash_formats": "ok", "roles": "ok"} == outcome(report)
    assert "plain http (allowed for this site)" == only(report, "tls").detail
    assert only(report, "relay_check").detail == (
        f"the site signed a ping to the relay at {relay.url} and the relay accepted it")
    assert [] == b.requests  # testing delivers nothing


async def test_a_wrong_key_in_wordpress_fails_naming_the_key(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, key=SiteKey.generate())

    report = await connection_test(relay.config, "b")

    ping = only(report, "ping")
    assert not report.passed
    assert ping.detail == ("the site refused the relay's signature (401): the key pasted into "
                           "WordPress differs from the relay's key for site 'b'")

    assert "USERRELAY_KEY" in ping.fix and "userrelay keys rotate b" in ping.fix
    assert "skip" == only(report, "relay_check").status


async def test_no_plugin_at_the_url_fails_with_404(aiohttp_server: Any, relay_factory: Any,
                                                   tmp_path: Path) -> None:
    async def no_route(request: web.Request) -> web.Response:
        return web.json_response({"code": "rest_no_route", "message": "No route was found",
                                  "data": {"status": 404}}, status=404)
    wordpress_only = web.Application()
    wordpress_only.router.add_post("/wp-json/userrelay/v1/ping", no_route)
    wordpress = await aiohttp_server(wordpress_only)
    nothing = await aiohttp_server(web.Application())
    relay = await relay_factory(settings(tmp_path, [
        site("a", str(wordpress.make_url("")).rstrip("/")),
        site("b", str(nothing.make_url("")).rstrip("/"))], []), start_links=False)

    without_plugin = only(await connection_test(relay.config, "a"), "ping")
    not_wordpress = only(await connection_test(relay.config, "b"), "ping")

    assert without_plugin.detail.endswith(
        "answered 404: WordPress is there but the UserRelay plugin is not active, or it is an "
        "older version that does not speak protocol 2")
    assert not_wordpress.detail.endswith(
        "answered 404: the UserRelay plugin is not active there, or the site URL is wrong")
    assert "activate the UserRelay plugin" in not_wordpress.fix


async def test_a_clock_off_by_a_minute_warns_and_still_passes(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, clock_offset=60)

    report = await connection_test(relay.config, "b")

    clock = only(report, "clock")
    assert report.passed
    assert "warn" == clock.status
    assert clock.detail.startswith("the site's clock is +60 s from the relay's")


async def test_a_clock_off_by_more_than_five_minutes_fails(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, clock_offset=-400)

    report = await connection_test(relay.config, "b")

    assert not report.passed
    assert ("fail", "fail") == (only(report, "ping").status, only(report, "clock").status)
    assert only(report, "ping").detail.startswith(
        "the site refused the relay's signature because the clocks differ")
    # From the Date header of the refusal: whole seconds.
    assert re.match(r"the site's clock is -(399|400|401) s from the relay's",
                    only(report, "clock").detail)
    assert "NTP" in only(report, "clock").fix


async def test_a_refused_connection_fails_and_skips_what_depends_on_it(
        relay_factory: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    relay = await relay_factory(settings(tmp_path, [site("a", f"http://127.0.0.1:{port}"),
                                                    site("b", "http://127.0.0.1:9")], []),
                                start_links=False)

    report = await connection_test(relay.config, "a")

    tcp = only(report, "tcp")
    assert (False, "fail") == (report.passed, tcp.status)
    assert tcp.detail == f"127.0.0.1:{port} refused the connection"
    assert "web server running" in tcp.fix
    assert {"ping", "relay_check", "wordpress", "hash_formats"} <= {
        c.name for c in report.checks if c.status == "skip"}


async def test_a_host_that_does_not_resolve_fails_at_dns(relay_factory: Any,
                                                         tmp_path: Path) -> None:
    relay = await relay_factory(settings(tmp_path, [site("a", "https://nonexistent.invalid"),
                                                    site("b", "http://127.0.0.1:9")], []),
                                start_links=False)

    report = await connection_test(relay.config, "a")

    dns = only(report, "dns")
    assert (False, "fail") == (report.passed, dns.status)
    assert dns.detail.startswith("cannot resolve nonexistent.invalid: ")
    assert "skip" == only(report, "tcp").status


async def test_a_plugin_set_up_as_another_site_fails(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, site_id="shop")

    ping = only(await connection_test(relay.config, "b"), "ping")

    assert ping.detail.endswith("is set up as site 'shop', not 'b'")
    assert "USERRELAY_SITE" in ping.fix


async def test_a_site_that_cannot_reach_the_relay_fails_the_other_way(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, relay_url="http://127.0.0.1:9")

    report = await connection_test(relay.config, "b")

    check = only(report, "relay_check")
    assert ("ok", "fail") == (only(report, "ping").status, check.status)
    assert check.detail.startswith("the site cannot reach the relay at http://127.0.0.1:9: ")
    assert "USERRELAY_URL" in check.fix


async def test_an_old_wordpress_warns(two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites, wordpress="5.9.3")

    report = await connection_test(relay.config, "b")

    assert report.passed
    assert "warn" == only(report, "wordpress").status
    assert "older than 6.1" in only(report, "wordpress").detail


async def test_passwords_from_a_68_site_to_a_61_site_are_noted(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    a, b = await partner_factory(), await partner_factory()
    relay = await relay_factory(settings(tmp_path, [site("a", a.url), site("b", b.url)], [
        {"id": "a-b", "site": "a", "remote": "b", "direction": "push", "outgoing": PASSWORDS}]),
        start_links=False)
    for name, partner in (("a", a), ("b", b)):
        partner.key, partner.site_id, partner.relay_url = relay.keys[name], name, relay.url
    a.wordpress, a.hash_formats = "6.8.1", ["phpass", "bcrypt", "wp-bcrypt"]
    await connection_test(relay.config, "a")

    report = await connection_test(relay.config, "b")

    note = ("site 'a' (WordPress 6.8.1) writes $wp$ password hashes, which site 'b' (WordPress "
            "6.1.9) cannot verify: password changes over link a-b will be refused there")
    hashes = only(report, "hash_formats")
    assert (True, "warn") == (report.passed, hashes.status)
    assert note in hashes.detail
    assert note in only(await connection_test(relay.config, "a"), "hash_formats").detail


async def test_a_61_site_whose_plugin_verifies_wp_hashes_takes_passwords_from_a_68_site(
        partner_factory: Any, relay_factory: Any, tmp_path: Path) -> None:
    a, b = await partner_factory(), await partner_factory()
    relay = await relay_factory(settings(tmp_path, [site("a", a.url), site("b", b.url)], [
        {"id": "a-b", "site": "a", "remote": "b", "direction": "push", "outgoing": PASSWORDS}]),
        start_links=False)
    for name, partner in (("a", a), ("b", b)):
        partner.key, partner.site_id, partner.relay_url = relay.keys[name], name, relay.url
    a.wordpress, a.hash_formats = "6.8.1", ["phpass", "bcrypt", "wp-bcrypt"]
    b.hash_formats, b.hash_formats_by_plugin = ["phpass", "bcrypt", "wp-bcrypt"], ["wp-bcrypt"]
    await connection_test(relay.config, "a")

    hashes = only(await connection_test(relay.config, "b"), "hash_formats")

    assert ("ok", "verifies phpass ($P$), bcrypt ($2y$), wp-bcrypt ($wp$, by the plugin on "
            "WordPress 6.1.9)") == (hashes.status, hashes.detail)
    assert "ok" == only(await connection_test(relay.config, "a"), "hash_formats").status


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost that no authority signed, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_a_certificate_nobody_vouches_for_fails_tls(
        aiohttp_server: Any, relay_factory: Any, tmp_path: Path,
        self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await aiohttp_server(web.Application(), ssl=context)
    relay = await relay_factory(settings(tmp_path, [
        {"id": "a", "url": f"https://localhost:{server.port}"},
        site("b", "http://127.0.0.1:9")], []), start_links=False)

    report = await connection_test(relay.config, "a")

    tls = only(report, "tls")
    assert ("ok", "fail") == (only(report, "tcp").status, tls.status)
    assert tls.detail.startswith("the certificate of localhost is not trusted (the system's "
                                 "trusted authorities): self")
    assert "certificate authority" in tls.fix


async def test_the_result_is_recorded_without_the_key_and_a_later_failure_keeps_the_pass(
        two_sites: Any) -> None:
    relay, b = await relay_with_b(two_sites)
    await connection_test(relay.config, "b")
    b.key = SiteKey.generate()  # someone pastes a wrong key into the site afterwards

    failed = await connection_test(relay.config, "b")

    row = relay.db("SELECT * FROM site_tests WHERE site = 'b'")
    stored = json.dumps(row)
    assert not failed.passed
    assert [(0,)] == relay.db("SELECT passed FROM site_tests WHERE site = 'b'")
    assert relay.keys["b"].secret not in stored
    assert relay.keys["b"].secret.removeprefix("whsec_") not in stored
    with LinkBook(relay.config) as book:
        assert book.last_test("b").passed_at is not None  # type: ignore[union-attr]
        assert book.state("a-b").missing == (
            "site 'a' has not passed a connection test yet; run userrelay sites test a",)


async def test_sites_test_prints_success_or_each_failure_and_what_to_do(
        two_sites: Any, tmp_path: Path) -> None:
    relay, b = await relay_with_b(two_sites)
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": str(relay.config.database_path),
        "sites": [{"id": s.id, "label": s.label, "url": s.url, "allow_http": True}
                  for s in relay.config.sites.values()],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]}))

    async def userrelay(*args: str) -> tuple[int, str]:
        # Asynchronously: the stand-in plugin and the relay answer from this event loop.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "sites", "test", *args, "--config", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        return int(process.returncode or 0), out.decode()

    passed = await userrelay("b")
    b.key = SiteKey.generate()
    failed = await userrelay("b")
    as_json = await userrelay("b", "--json")

    assert 0 == passed[0], passed[1]
    assert "Connection Test Successful" in passed[1]
    assert "Link a-b (a -> b, push): draft: site 'a' has not passed" in passed[1]
    assert 1 == failed[0]
    assert "Connection Test Failed: 1 check(s) failed (relay -> site ping)." in failed[1]
    assert "FAIL  relay -> site ping" in failed[1]
    assert "what to do: paste the current key of site 'b' into USERRELAY_KEY" in failed[1]
    assert relay.keys["b"].secret not in passed[1] + failed[1]
    document = json.loads(as_json[1])
    assert (1, False, "fail") == (as_json[0], document["passed"],
                                  {c["name"]: c["status"] for c in document["checks"]}["ping"])
