"""The connection test of one site: can the relay and that site's plugin work together?

Checks, in order, each with a status (ok, warn, fail, or skip when an earlier failure makes it
pointless), what was found, and for a failure what to do:

    key            the relay holds a key for the site
    dns            the site's host name resolves
    tcp            its port accepts a connection
    tls            https: the handshake and the certificate (plain http: allowed for this site)
    ping           relay -> site: the plugin answers a signed ``GET …/userrelay/v1/ping`` as
                   the right site (401: the key in WordPress differs; 404: no plugin there)
    relay_check    site -> relay: asked by ``?check_relay=1``, the plugin sends a signed ping to
                   the relay at its USERRELAY_URL and reports what it got
    clock          the site's clock against ours (warn beyond 30 s, fail beyond 300 s)
    wordpress      the WordPress and plugin versions (warn below 6.1)
    hash_formats   password hashes: does a partner write a format this site cannot verify
                   (``$wp$`` from 6.8+ to an older site whose plugin predates its own ``$wp$``
                   check), or the other way round?

It only reads keys (through ``KeyStore``) and writes nothing but the test record, so it runs
while the daemon runs. For callers (CLI, admin API):

    report = await run_connection_test(config, "shop", keys, tests=book.site_tests())
    record(book, report)         # or links.record_test(conn, …) inside a transaction
    report.passed, report.as_dict()
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from relay import __version__
from relay.config import Config
from relay.constants import PROTOCOL
from relay.db.links import SiteTest
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.model.routing import Router
from relay.sites import role_check
from relay.sites.client import PluginClient, tls_context
from relay.sites.connection_report import (
    FAIL,
    HASH_PREFIXES,
    NTP,
    OK,
    OLDEST_WORDPRESS,
    SKIP,
    WARN,
    Check,
    ConnectionReport,
    clock_offset,
    hash_written_by,
    read_json,
    version_tuple,
)

#: Seconds each step may take; the ping includes the plugin's own ping of the relay (5 s).
DEFAULT_TIMEOUT = 15.0
CLOCK_WARN, CLOCK_FAIL = 30.0, 300.0


async def run_connection_test(config: Config, site_id: str, keys: KeyStore, *,
                              tests: dict[str, SiteTest] | None = None,
                              timeout: float = DEFAULT_TIMEOUT,
                              session: aiohttp.ClientSession | None = None) -> ConnectionReport:
    """Run every check against ``site_id``; ``tests`` are the sites' last tests (what the
    partners' WordPress versions are, for the hash format check)."""
    site = config.sites[site_id]
    report = _Run(config, site_id, keys.key_id(site_id), timeout, tests or {})
    key = keys.get(site_id)
    own = session is None
    session = session or aiohttp.ClientSession(headers={"User-Agent": f"UserRelay/{__version__}"})
    try:
        await report.run(key, site.url, site.allow_http, session)
    finally:
        if own:
            await session.close()
    return report.report


class _Run:
    """One run of the checks; each step adds its check, or a skip once one has failed."""

    def __init__(self, config: Config, site_id: str, key_id: str | None, timeout: float,
                 tests: dict[str, SiteTest]) -> None:
        self.config, self.site_id, self.timeout, self.tests = config, site_id, timeout, tests
        self.report = ConnectionReport(site_id, config.sites[site_id].url, key_id, time.time())
        self.blocked: str | None = None
        self.address: str | None = None  # the address the TCP check reached

    def add(self, name: str, title: str, status: str, detail: str, fix: str | None = None,
            data: dict[str, Any] | None = None, blocks: bool = True) -> None:
        if self.blocked is not None:
            status, detail, fix = SKIP, f"not run: {self.blocked}", None
        elif status == FAIL and blocks:
            self.blocked = f"the {title} check failed"
        self.report.checks.append(Check(name, title, status, detail, fix, data))

    async def run(self, key: SiteKey | None, url: str, allow_http: bool,
                  session: aiohttp.ClientSession) -> None:
        site = self.site_id
        if key is None:  # the network checks can still run
            self.add("key", "key", FAIL, f"the relay holds no key for site {site!r}",
                     f"run {self.config.command(f'keys generate {site}')} and paste the key "
                     "into the site",
                     blocks=False)
        else:
            self.add("key", "key", OK, f"the relay holds a key for site {site!r}")
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = await self._dns(host, port)
        self.add("dns", "DNS", *self._dns_result(host, found))
        addresses = found if isinstance(found, list) else []
        if self.blocked is None:
            self.add("tcp", "TCP connection", *await self._tcp(addresses, port))
        else:
            self.add("tcp", "TCP connection", SKIP, "")
        if parts.scheme != "https":
            self.add("tls", "TLS", OK, "plain http (allowed for this site)" if allow_http
                     else "plain http")
        elif self.blocked is None and self.address is not None:
            self.add("tls", "TLS", *await self._tls(host, self.address, port))
        else:
            self.add("tls", "TLS", SKIP, "")
        answer: dict[str, Any] = {}
        clock: float | None = None
        if self.blocked is None and key is not None:
            answer, clock = await self._ping(key, url, session)
        else:
            self.add("ping", "relay -> site ping", SKIP, "not run: the relay holds no key")
        self._relay_check(answer)
        self._clock(clock)
        self._versions(answer)
        self._roles(answer)

    # --- network ---------------------------------------------------------------------------

    async def _dns(self, host: str, port: int) -> list[str] | str:
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM), self.timeout)
        except socket.gaierror as exc:
            return exc.strerror or str(exc)
        except TimeoutError:
            return f"no answer from the resolver within {self.timeout:g} s"
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _dns_result(self, host: str, found: list[str] | str) -> tuple[str, str, str | None]:
        if isinstance(found, str):
            return (FAIL, f"cannot resolve {host}: {found}",
                    f"check the site's url in {self.config.source} (site {self.site_id!r}) and "
                    f"the DNS record of {host}")
        if found == [host]:
            return OK, f"{host} is an address: nothing to resolve", None
        return OK, f"{host} resolves to {', '.join(found)}", None

    async def _tcp(self, addresses: list[str], port: int) -> tuple[str, str, str | None]:
        errors = []
        for address in addresses[:3]:
            started = time.monotonic()
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(address, port),
                                                   self.timeout)
            except TimeoutError:
                errors.append(f"{address}:{port} did not answer within {self.timeout:g} s")
                continue
            except OSError as exc:
                refused = isinstance(exc, ConnectionRefusedError)
                errors.append(f"{address}:{port} refused the connection" if refused
                              else f"cannot connect to {address}:{port}: {exc.strerror or exc}")
                continue
            writer.close()
            self.address = address
            took = (time.monotonic() - started) * 1000
            return OK, f"connected to {address}:{port} in {took:.0f} ms", None
        return (FAIL, "; ".join(errors),
                f"is the site's web server running and listening on port {port}, and does no "
                "firewall stand between the relay and the site?")

    async def _tls(self, host: str, address: str, port: int) -> tuple[str, str, str | None]:
        ca_file = self.config.sites[self.site_id].ca_file
        trusted = tls_context(ca_file)
        context = trusted if isinstance(trusted, ssl.SSLContext) else ssl.create_default_context()
        against = f"the authorities of {ca_file}" if ca_file else "the system's trusted authorities"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                address, port, ssl=context, server_hostname=host), self.timeout)
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or str(exc)
            fix = ("renew the certificate" if "expired" in why else
                   f"use a certificate that names {host}" if "mismatch" in why or "match" in why
                   else f"have the certificate of {host} signed by an authority of {ca_file}"
                   if ca_file else
                   f"install a certificate for {host} from a public certificate authority "
                   f"(e.g. Let's Encrypt), or name your own authority's certificate as ca_file "
                   f"of site {self.site_id!r} in {self.config.source}")
            return FAIL, f"the certificate of {host} is not trusted ({against}): {why}", fix
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            return (FAIL, f"the TLS handshake with {host}:{port} failed: {exc}",
                    f"does port {port} of {host} serve https?")
        cert = writer.get_extra_info("peercert") or {}
        writer.close()
        expires = ssl.cert_time_to_seconds(cert["notAfter"]) if "notAfter" in cert else None
        if expires is not None and expires - time.time() < 14 * 86400:
            days = (expires - time.time()) / 86400
            return (WARN, f"the certificate of {host} is trusted ({against}) but expires in "
                    f"{days:.0f} days",
                    "renew the certificate")
        until = f", valid until {time.strftime('%Y-%m-%d', time.gmtime(expires))}" \
            if expires is not None else ""
        return OK, f"the certificate of {host} is trusted ({against}){until}", None

    async def _ping(self, key: SiteKey, url: str,
                    session: aiohttp.ClientSession) -> tuple[dict[str, Any], float | None]:
        """The signed ping; returns the plugin's answer and the site's clock minus ours."""
        client = PluginClient(self.site_id, url, key, session, self.timeout,
                              self.config.sites[self.site_id].ca_file)
        ping = client.url("ping")
        site, title = self.site_id, "relay -> site ping"
        sent = time.time()
        try:
            reply = await client.call("ping", check_relay=True)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.add("ping", title, FAIL, f"no answer: {client.unreachable('ping', exc)}",
                     "is the site up? Look at its web server's error log")
            return {}, None
        status, body = reply.status, reply.body
        date, location = reply.headers.get("Date"), reply.headers.get("Location", "")
        middle = (sent + time.time()) / 2
        answer = read_json(body)
        clock = clock_offset(answer.get("time"), date, middle)
        code = str(answer.get("code", ""))
        if status == 200 and "site" in answer:
            if answer["site"] != site:
                self.add("ping", title, FAIL, f"the plugin at {url} is set up as site "
                         f"{answer['site']!r}, not {site!r}",
                         f"set USERRELAY_SITE to '{site}' in that site's wp-config.php (or "
                         "Settings > UserRelay), or correct the site's url in the relay config")
            else:
                self.add("ping", title, OK, f"the plugin at {url} accepted the relay's "
                         f"signature and answered as site {site!r}")
            return answer, clock
        if status == 401 and code == "userrelay_stale_timestamp":
            self.add("ping", title, FAIL, "the site refused the relay's signature because the "
                     f"clocks differ: {answer.get('message', '')}", NTP)
        elif status == 401 and code == "userrelay_not_configured":
            self.add("ping", title, FAIL, f"the plugin on site {site!r} has no valid key yet",
                     f"paste the key of site {site!r} into USERRELAY_KEY in its wp-config.php (or "
                     f"Settings > UserRelay); {self.config.command(f'keys rotate {site}')} "
                     "makes a new one")
        elif status in (400, 401, 403, 404) and code == "userrelay_protocol_version":
            self.add("ping", title, FAIL, f"the plugin on site {site!r} speaks another version "
                     f"of the protocol: {answer.get('message', '')}",
                     "use a plugin and a relay of the same protocol version (docs/protocol.md)")
        elif status in (401, 403):
            self.add("ping", title, FAIL, f"the site refused the relay's signature ({status}): "
                     f"the key pasted into WordPress differs from the relay's key for site "
                     f"{site!r}{reply.protocol_hint()}",
                     f"paste the current key of site {site!r} into USERRELAY_KEY in its "
                     f"wp-config.php (or Settings > UserRelay); if it is lost, "
                     f"{self.config.command(f'keys rotate {site}')} makes a new one")
        elif status == 404:
            wordpress = code == "rest_no_route"
            self.add("ping", title, FAIL, f"{ping} answered 404: " + (
                "WordPress is there but the UserRelay plugin is not active, or it is an older "
                f"version that does not speak protocol {PROTOCOL}" if wordpress else
                "the UserRelay plugin is not active there, or the site URL is wrong"),
                "activate the UserRelay plugin (wp-admin > Plugins), with the version that comes "
                "with this relay, and check the site's url in the relay config: the WordPress "
                "address, e.g. https://shop.example.com")
        elif 300 <= status < 400:
            self.add("ping", title, FAIL, f"{ping} redirects to {location or '?'} ({status})",
                     "set the site's url in the relay config to the address it redirects to")
        else:
            excerpt = body[:200].decode("utf-8", "replace").strip()
            self.add("ping", title, FAIL, f"{ping} answered {status}: {excerpt or '(empty)'}",
                     "look at the site's PHP error log")
        return {}, clock

    # --- from the plugin's answer ----------------------------------------------------------

    def _relay_check(self, answer: dict[str, Any]) -> None:
        title, site = "site -> relay ping", self.site_id
        check = answer.get("relay_check")
        if not answer:
            self.add("relay_check", title, SKIP, "not run: the plugin did not answer the ping")
            return
        if not isinstance(check, dict):
            self.add("relay_check", title, FAIL, "the plugin did not report a signed ping of "
                     "its own to the relay", "update the UserRelay plugin on the site")
            return
        relay, status = check.get("url") or "USERRELAY_URL", check.get("status")
        error = str(check.get("error") or "")
        if status == 200:
            self.add("relay_check", title, OK, f"the site signed a ping to the relay at {relay} "
                     "and the relay accepted it")
        elif status is None:
            self.add("relay_check", title, FAIL, f"the site cannot reach the relay at {relay}: "
                     f"{error}", "check USERRELAY_URL on the site, that the relay runs "
                     "(userrelay serve) on an address the site can reach, and that no firewall "
                     "is in between")
        elif status == 404:
            self.add("relay_check", title, FAIL, f"the relay at {relay} does not know site "
                     f"{site!r}: {error}", f"set USERRELAY_SITE to '{site}' on the site, and "
                     "USERRELAY_URL to this relay's address")
        elif status == 401:
            self.add("relay_check", title, FAIL, f"the relay at {relay} refused the site's "
                     f"signature: {error}", "USERRELAY_URL on the site must be this relay's "
                     f"address, and USERRELAY_KEY the current key of site {site!r}")
        else:
            self.add("relay_check", title, FAIL, f"the relay at {relay} answered {status}: "
                     f"{error}", "check USERRELAY_URL on the site")

    def _clock(self, skew: float | None) -> None:
        if skew is None:
            status, detail = (SKIP, f"not run: {self.blocked}") if self.blocked else (
                WARN, "the site sent neither a time nor a Date header to compare clocks with")
            self.report.checks.append(Check("clock", "clock", status, detail))
            return
        detail = (f"the site's clock is {skew:+.0f} s from the relay's (signatures allow "
                  f"{CLOCK_FAIL:.0f} s)")
        status = OK if abs(skew) <= CLOCK_WARN else WARN if abs(skew) <= CLOCK_FAIL else FAIL
        # Measured even when the ping was refused: the clocks may be why.
        self.report.checks.append(Check("clock", "clock", status, detail,
                                        None if status == OK else NTP))

    def _versions(self, answer: dict[str, Any]) -> None:
        if not answer:
            self.add("wordpress", "WordPress", SKIP, "not run: the plugin did not answer")
            self.add("hash_formats", "password hashes", SKIP, "not run: the plugin did not answer")
            return
        version, plugin = str(answer.get("wordpress", "?")), str(answer.get("plugin", "?"))
        data: dict[str, Any] = {"version": version, "plugin": plugin}
        if version_tuple(version) < OLDEST_WORDPRESS:
            self.add("wordpress", "WordPress", WARN, f"WordPress {version} (plugin {plugin}) is "
                     "older than 6.1, the oldest the plugin is tested with", "update WordPress",
                     data)
        else:
            self.add("wordpress", "WordPress", OK, f"WordPress {version}, plugin {plugin}",
                     data=data)
        accepts = [str(f) for f in answer.get("hash_formats", [])]
        # Formats the plugin verifies itself (the $wp$ check on WordPress before 6.8).
        by_plugin = {str(f) for f in answer.get("hash_formats_by_plugin", [])}
        notes = self._hash_notes(version, accepts)
        data = {"accepts": accepts, "writes": hash_written_by(version),
                "by_plugin": sorted(by_plugin)}
        shown = ", ".join(
            f"{f} ({HASH_PREFIXES.get(f, '?')}"
            + (f", by the plugin on WordPress {version})" if f in by_plugin else ")")
            for f in accepts) or "none"
        if notes:
            self.add("hash_formats", "password hashes", WARN, f"verifies {shown}; but "
                     + "; ".join(notes), "update the older site to WordPress 6.8+, or leave "
                     "'password' out of the links named", data)
        else:
            self.add("hash_formats", "password hashes", OK, f"verifies {shown}", data=data)

    def _roles(self, answer: dict[str, Any]) -> None:
        """The site's roles, kept for ``check-config``; a role a link names that it lacks."""
        self.add(role_check.CHECK, "roles", *role_check.verdict(self.config, self.site_id,
                                                                 answer))

    def _hash_notes(self, version: str, accepts: list[str]) -> list[str]:
        """Password changes this site and its partners could not verify from each other."""
        notes = []
        router, me = Router(self.config), self.site_id
        for partner in self.config.sites:
            if partner == me:
                continue
            theirs = self.tests.get(partner)
            facts = {c["name"]: c.get("data") or {} for c in (theirs.checks if theirs else [])}
            their_version = facts.get("wordpress", {}).get("version")
            if their_version is None:
                continue  # not tested yet: its formats are not known
            versions = {me: version, partner: their_version}
            verifies: dict[str, list[str]] = {
                me: accepts, partner: facts.get("hash_formats", {}).get("accepts", [])}
            for source, target in ((partner, me), (me, partner)):
                route = next((r for r in router.routes_from(source) if r.target == target), None)
                if route is None or "password" not in route.actions:
                    continue
                writes = hash_written_by(versions[source])
                if writes not in verifies[target]:
                    notes.append(
                        f"site {source!r} (WordPress {versions[source]}) writes "
                        f"{HASH_PREFIXES[writes]} password hashes, which site {target!r} "
                        f"(WordPress {versions[target]}) cannot verify: password changes over "
                        f"link {route.link} will be refused there")
        return notes


