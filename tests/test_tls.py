"""Relay -> site over real TLS: a CA made by the test, and a stand-in plugin serving https.

The relay verifies every site's certificate, against the system's store or the authorities of
the site's ``ca_file``; it never turns verification off. Test Connection names what is wrong
with a certificate (unknown authority, expired, another host's) and what to do.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay import config as config_module
from relay.errors import ConfigError
from tests.partner import Partner
from tests.relay_settings import settings, site
from tests.support import event
from tests.test_connection_test import connection_test, only
from tests.tlslab import LocalCA

RELAY = Path(__file__).resolve().parents[1] / "relay"


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "ca")


@pytest.fixture
def https_partner(aiohttp_server: Any) -> Any:
    """A stand-in plugin served over https with a certificate's (cert, key)."""
    async def make(cert_and_key: tuple[Path, Path]) -> tuple[Partner, str]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*cert_and_key)
        partner = Partner()
        app = web.Application()
        app.router.add_post("/wp-json/userrelay/v1/events", partner.handle)
        app.router.add_post("/wp-json/userrelay/v1/ping", partner.ping)
        app.router.add_post("/wp-json/userrelay/v1/nudge", partner.nudge)
        partner.server = await aiohttp_server(app, ssl=context)
        return partner, f"https://localhost:{partner.server.port}"
    return make


async def site_b_tested(relay_factory: Any, tmp_path: Path, partner: Partner, url: str,
                 ca_file: Path | None, start_links: bool = False) -> Any:
    """A relay whose site b is ``url`` (with ``ca_file``); b's connection test report."""
    b = {"id": "b", "url": url, **({"ca_file": str(ca_file)} if ca_file else {})}
    relay = await relay_factory(settings(tmp_path, [site("a", "http://127.0.0.1:9"), b], [
        {"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]),
        start_links=start_links)
    partner.key, partner.site_id, partner.relay_url = relay.keys["b"], "b", relay.url
    return relay, await connection_test(relay.config, "b")


async def test_a_certificate_of_the_sites_own_ca_passes_with_its_ca_file(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("good", ["localhost", "127.0.0.1"]))

    _, report = await site_b_tested(relay_factory, tmp_path, partner, url, ca.cert)

    tls = only(report, "tls")
    assert ("ok", "ok") == (tls.status, only(report, "ping").status)
    assert tls.detail.startswith(f"the certificate of localhost is trusted (the authorities "
                                 f"of {ca.cert}), valid until ")
    assert report.passed


async def test_without_its_ca_file_the_same_certificate_fails_and_the_fix_names_ca_file(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("good", ["localhost"]))

    _, report = await site_b_tested(relay_factory, tmp_path, partner, url, None)

    tls = only(report, "tls")
    assert ("fail", "skip") == (tls.status, only(report, "ping").status)
    assert ("the certificate of localhost is not trusted (the system's trusted authorities): "
            "unable to get local issuer certificate") == tls.detail
    assert "name your own authority's certificate as ca_file of site 'b' in" in tls.fix
    assert not report.passed


async def test_an_expired_certificate_fails_tls_saying_so(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("old", ["localhost"], expired=True))

    _, report = await site_b_tested(relay_factory, tmp_path, partner, url, ca.cert)

    tls = only(report, "tls")
    assert (f"the certificate of localhost is not trusted (the authorities of {ca.cert}): "
            "certificate has expired", "renew the certificate") == (tls.detail, tls.fix)
    assert not report.passed


async def test_a_certificate_for_another_host_fails_tls_naming_the_host(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("other", ["shop.example.test"]))

    _, report = await site_b_tested(relay_factory, tmp_path, partner, url, ca.cert)

    tls = only(report, "tls")
    assert "fail" == tls.status
    assert re.fullmatch(r"the certificate of localhost is not trusted \(the authorities of "
                        r".*\): Hostname mismatch, certificate is not valid for 'localhost'\.",
                        tls.detail), tls.detail
    assert "use a certificate that names localhost" == tls.fix


async def test_another_authority_in_ca_file_does_not_vouch_for_the_site(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("good", ["localhost"]))
    stranger = LocalCA(tmp_path / "stranger", "Someone else's CA")

    _, report = await site_b_tested(relay_factory, tmp_path, partner, url, stranger.cert)

    tls = only(report, "tls")
    assert "fail" == tls.status
    assert f"signed by an authority of {stranger.cert}" in tls.fix


async def test_deliveries_to_an_https_site_use_its_ca_file(
        https_partner: Any, relay_factory: Any, tmp_path: Path, ca: LocalCA) -> None:
    partner, url = await https_partner(ca.issue("good", ["localhost"]))
    relay, _ = await site_b_tested(relay_factory, tmp_path, partner, url, ca.cert, start_links=True)

    status, _ = await relay.post("a", [event("e1", 7, ["create"])])

    assert 202 == status
    await partner.wait_for(lambda: len(partner.events) == 1)


def test_a_ca_file_that_is_missing_or_holds_no_certificate_is_a_config_error(
        tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("")
    for ca_file, problem in (("missing.pem", "does not exist"),
                             ("empty.pem", "holds no CA certificate ssl can load")):
        with pytest.raises(ConfigError) as raised:
            config_module.from_mapping({"sites": [
                {"id": "b", "url": "https://shop.example.test", "ca_file": ca_file}]},
                base_dir=tmp_path)
        assert f"sites[0] (b).ca_file: {tmp_path / ca_file} {problem}" in str(raised.value)


def test_the_relay_never_turns_certificate_verification_off() -> None:
    turned_off = re.compile(r"ssl\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|"
                            r"verify_ssl\s*=\s*False|_create_unverified_context")
    found = [f"{path.relative_to(RELAY.parent)}:{n}" for path in sorted(RELAY.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if turned_off.search(line)]

    assert [] == found
