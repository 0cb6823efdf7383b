"""The web console: sign-in and session, CSRF, the Content-Security-Policy, the wizard on a
real relay process (which reloads its configuration after each change), the admin API
endpoints it uses, and the vendored files."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from relay.config import load
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.web.console import session as sessions
from tests.support import RelayProcess, record, secret, secret_key, until

STATIC = Path(__file__).resolve().parents[1] / "relay" / "web" / "console" / "static"
KEY = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


class Console:
    """A browser's view of the console: a cookie jar, forms posted with their CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/") + "/console/"
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.pages: list[str] = []

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, data: Any = None,
                      headers: dict[str, str] | None = None, redirects: bool = True
                      ) -> tuple[int, str, Any]:
        async with self.session.request(method, self.base + path, data=data,
                                        headers=headers, allow_redirects=redirects) as resp:
            text = await resp.text()
            found = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
            if found:
                self.csrf = found.group(1)
            self.pages.append(text)
            # the one page that shows a key, on purpose
            shows_key = 'id="api-key"' in text
            text_kept = KEY.sub("whsec_(shown once)", text) if shows_key else text
            record("console-pages", f"{method} {path} {resp.status}\n{text_kept}")
            return resp.status, text, resp

    async def get(self, path: str) -> tuple[int, str, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, data: dict[str, Any] | list[tuple[str, str]] | None = None
                   ) -> tuple[int, str, Any]:
        items = list(data.items()) if isinstance(data, dict) else list(data or [])
        return await self.request("POST", path, [("csrf", self.csrf), *items])

    async def sign_in(self, token: str) -> None:
        status, text, _ = await self.request("POST", "sign-in", {"token": token})
        assert 200 == status and "Dashboard" in text, text[:500]


class Scripts(HTMLParser):
    """Inline script, inline event handlers and style attributes, which the CSP forbids."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self.in_script = "src" not in names
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}>")

    def handle_endtag(self, tag: str) -> None:
        self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.inline.append(data[:80])


@pytest.fixture
async def console_relay(tmp_path: Path, admin_token: str) -> Any:
    """A real ``userrelay serve`` with the admin API (and so the console) on a free port,
    its configuration file empty of sites; returns (process, console, config path)."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin_token)
    token_file.chmod(0o600)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin_port = s.getsockname()[1]
    path = tmp_path / "relay.yaml"
    path.write_text(
        "# the console's test relay\n"
        "listen: {host: 127.0.0.1, port: 0}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}, token_file: {token_file}}}\n"
        f"database: {tmp_path / 'relay.sqlite3'}\n"
        "delivery: {retry_schedule: [0.05], jitter: 0, timeout: 5, lease: 10, "
        "shutdown_grace: 2}\n")
    process = RelayProcess(path)
    await process.start()
    await process.logged("admin_started")
    console = Console(f"http://127.0.0.1:{admin_port}")
    try:
        yield process, console, path
    finally:
        await console.close()
        if process.process is not None and process.process.returncode is None:
            await process.terminate()


async def add_site(console: Console, site_id: str, url: str, link_to: str = "") -> str:
    """Add a site through the wizard; the key its page shows (registered as a secret)."""
    fields = {"url": url, "label": site_id.title(), "id": site_id}
    if link_to:
        fields["site"] = link_to
    status, text, _ = await console.post("sites/new", fields)
    assert 200 == status, text[:2000]
    key = re.search(r'id="api-key"[^>]*value="(whsec_[^"]+)"', text)
    assert key, text[:2000]
    return secret(key.group(1))


async def wait_until_known(console: Console, site_id: str) -> None:
    """The relay reloads after a change: wait until the running one knows ``site_id``."""
    async def known() -> bool:
        try:
            status, text, _ = await console.get(f"setup/test?remote={site_id}")
        except aiohttp.ClientError:  # the admin listener restarts with the reload
            return False
        return status == 200 and "reloading" not in text
    for _ in range(200):
        if await known():
            return
        import asyncio
        await asyncio.sleep(0.05)
    raise AssertionError(f"the relay did not get to know {site_id}")


async def test_without_a_session_a_page_leads_to_sign_in_and_a_change_is_refused(
        console_relay: Any) -> None:
    process, console, path = console_relay
    before = path.read_text()

    page, _, resp = await console.request("GET", "", redirects=False)
    posted, text, _ = await console.request("POST", "sites/new", {"id": "x",
                                            "url": "https://x.example"})
    live, _, _ = await console.request("GET", "live", headers={"HX-Request": "true"})

    assert 303 == page and resp.headers["Location"].endswith("/console/sign-in")
    assert 401 == posted and "Sign in first" in text
    assert 401 == live
    assert before == path.read_text()


async def test_a_wrong_token_gets_no_session(console_relay: Any, admin_token: str) -> None:
    _, console, _ = console_relay

    status, text, resp = await console.request("POST", "sign-in", {"token": admin_token + "x"})
    after, _, _ = await console.request("GET", "", redirects=False)

    assert 401 == status and "not the admin token" in text
    assert sessions.COOKIE not in resp.cookies
    assert 303 == after


async def test_the_session_cookie_is_httponly_and_samesite_strict_and_pages_allow_no_inline_script(
        console_relay: Any, admin_token: str) -> None:
    _, console, _ = console_relay

    _, _, resp = await console.request("POST", "sign-in", {"token": admin_token},
                                       redirects=False)
    cookie = resp.cookies[sessions.COOKIE]
    pages = [await console.get(p) for p in ("", "live", "sites/new", "sign-in")]

    assert cookie["httponly"] and "strict" == cookie["samesite"].lower()
    assert "/console/" == cookie["path"]
    for status, text, page in pages:
        assert 200 == status
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "no-store" == page.headers["Cache-Control"]
        parser = Scripts()
        parser.feed(text)
        assert [] == parser.inline
    assert "//" not in re.sub(r"https?://[^\"' ]*(example|127\.0\.0\.1)[^\"' ]*", "",
                              " ".join(re.findall(r'(?:src|href)="([^"]+)"', pages[0][1])))


async def test_a_change_with_a_bad_or_missing_csrf_token_is_refused_and_changes_nothing(
        console_relay: Any, admin_token: str) -> None:
    _, console, path = console_relay
    await console.sign_in(admin_token)
    before = path.read_text()
    fields = [("url", "http://127.0.0.1:9"), ("id", "shop")]

    missing, _, _ = await console.request("POST", "sites/new", fields)
    wrong, text, _ = await console.request("POST", "sites/new",
                                           [("csrf", "0" * 64), *fields])
    foreign, _, _ = await console.request("POST", "sites/new", [("csrf", console.csrf),
                                          *fields], headers={"Origin": "https://evil.example"})

    assert (403, 403, 403) == (missing, wrong, foreign)
    assert "CSRF" in text
    assert before == path.read_text()


async def test_a_refused_site_is_shown_next_to_its_field_and_nothing_is_written(
        console_relay: Any, admin_token: str) -> None:
    _, console, path = console_relay
    await console.sign_in(admin_token)
    before = path.read_text()

    status, text, _ = await console.post("sites/new", {"url": "http://shop.example.com",
                                                       "id": "shop"})
    bad_id, id_text, _ = await console.post("sites/new", {"url": "https://shop.example.com",
                                                          "id": "Shop Main"})

    assert 400 == status and 400 == bad_id
    assert re.search(r'id="f-url-error"[^>]*>[^<]*expected an https:// URL', text)
    assert 'id="f-id-error"' in id_text and 'id="f-url-error"' not in id_text
    assert before == path.read_text()


async def test_the_wizard_adds_a_site_shows_its_key_once_and_the_relay_learns_it_by_reload(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    shop = await partner_factory()

    key = await add_site(console, "shop", shop.url)
    await wait_until_known(console, "shop")
    later = [await console.get(p) for p in ("", "live", "setup/test?remote=shop",
                                            "sites/new")]

    config = load(path)
    assert ["shop"] == list(config.sites) and shop.url == config.sites["shop"].url
    assert "# the console's test relay" in path.read_text()  # the file keeps its comments
    assert key not in path.read_text()
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        stored = store.get("shop")
        assert stored is not None and key == stored.secret
    finally:
        store.close()
    await process.logged("relay_reloaded")
    for status, text, _ in later:
        assert 200 == status and not KEY.search(text)


async def test_next_stays_disabled_until_both_sites_pass_and_later_steps_send_back_to_the_test(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    key_a = await add_site(console, "a", a.url)
    await wait_until_known(console, "a")
    key_b = await add_site(console, "b", b.url, link_to="a")
    await wait_until_known(console, "b")
    a.site_id, a.relay_url, a.key = "a", process.url, secret_key(SiteKey(key_a))
    b.site_id, b.relay_url = "b", process.url  # b has no key yet: its test fails
    state = {"site": "a", "remote": "b"}

    _, untested, _ = await console.get("setup/test?site=a&remote=b")
    sent_back, _, resp = await console.request("GET", "setup/type?site=a&remote=b",
                                               redirects=False)
    _, failed, _ = await console.post("setup/test", state)
    b.key = secret_key(SiteKey(key_b))
    _, passed, _ = await console.post("setup/test", state)

    assert re.search(r'id="next"[^>]*disabled', untested)
    assert 303 == sent_back and "setup/test" in resp.headers["Location"]
    assert re.search(r'id="next"[^>]*disabled', failed)
    assert "Connection Test Failed" in failed and 'class="check-fail"' in failed
    assert not re.search(r'id="next"[^>]*disabled', passed), passed[:3000]
    assert passed.count("✔ Connection Test Successful") == 2 and "Status: Successful" in passed


async def test_the_wizard_starts_a_link_with_the_rules_chosen_and_shows_its_progress(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    keys = {"a": await add_site(console, "a", a.url)}
    await wait_until_known(console, "a")
    keys["b"] = await add_site(console, "b", b.url, link_to="a")
    await wait_until_known(console, "b")
    for partner, name in ((a, "a"), (b, "b")):
        partner.site_id, partner.relay_url = name, process.url
        partner.key = secret_key(SiteKey(keys[name]))
    await console.post("setup/test", {"site": "a", "remote": "b"})
    query = "site=a&remote=b&sync=users"

    _, kinds, _ = await console.get("setup/type?site=a&remote=b")
    _, rules, _ = await console.get(f"setup/rules?{query}")
    refused, delete_text, _ = await console.get(
        f"setup/direction?{query}&outgoing=none&outgoing=create&outgoing=delete")
    _, directions, _ = await console.get(
        f"setup/direction?{query}&outgoing=none&outgoing=create&outgoing=edit")
    _, summary, _ = await console.get(
        f"setup/start?{query}&outgoing=none&outgoing=create&outgoing=edit&direction=push")
    status, progress, resp = await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit")])

    assert re.search(r'id="sync-orders"[^>]*disabled', kinds) and "Coming soon" in kinds
    for action in ("create", "edit", "roles"):
        assert re.search(f'id="outgoing-{action}"[^>]*checked', rules)
    assert not re.search(r'id="outgoing-delete"[^>]*checked', rules)
    assert 400 == refused and 'id="delete-error"' in delete_text
    assert "Best for production → staging" in directions and "overwrite" in directions
    assert "Push to Remote" in summary
    assert 200 == status and str(resp.url).endswith("/console/links/a-b/progress")
    link = load(path).links["a-b"]
    assert ("push", {"create", "edit"}) == (link.direction, set(link.outgoing))
    await until(lambda: bool(process.lines) and any(
        line.get("event") == "relay_reloaded" and "a-b" in line.get("links", [])
        for line in process.lines))

    async def shown() -> bool:
        try:
            _, text, _ = await console.get("links/a-b/progress/live")
        except aiohttp.ClientError:
            return False
        return 'id="initial-sync"' in text and ": active" in text
    for _ in range(200):
        if await shown():
            break
        import asyncio
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the link's initial sync is not shown")


async def two_tested_sites(console: Console, process: RelayProcess,
                           partner_factory: Any) -> None:
    """Sites a and b added through the wizard, each with its plugin's key, both tested."""
    a, b = await partner_factory(), await partner_factory()
    keys = {"a": await add_site(console, "a", a.url)}
    await wait_until_known(console, "a")
    keys["b"] = await add_site(console, "b", b.url, link_to="a")
    await wait_until_known(console, "b")
    for partner, name in ((a, "a"), (b, "b")):
        partner.site_id, partner.relay_url = name, process.url
        partner.key = secret_key(SiteKey(keys[name]))
    _, tested, _ = await console.post("setup/test", {"site": "a", "remote": "b"})
    assert tested.count("✔ Connection Test Successful") == 2, tested[:3000]


async def wait_for_link(console: Console, link: str) -> None:
    """The relay reloads after a change: wait until the running one has ``link``."""
    for _ in range(200):
        try:
            status, _, _ = await console.request("GET", f"links/{link}/edit", redirects=False)
        except aiohttp.ClientError:  # the admin listener restarts with the reload
            status = 0
        if status == 303:
            return
        import asyncio
        await asyncio.sleep(0.05)
    raise AssertionError(f"the relay did not get to know link {link}")


async def test_the_wizard_starts_a_link_with_the_roles_and_fields_chosen_and_no_initial_sync(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    query = "site=a&remote=b&sync=users&outgoing=none&outgoing=create&outgoing=edit"
    chosen = ("&roles_outgoing=customer,+subscriber&roles_incoming=customer"
              "&fields=none&fields=first_name&fields=email&initial_sync=off")

    _, rules, _ = await console.get(f"setup/rules?{query}")
    refused, refusal, _ = await console.get(f"setup/direction?{query}"
                                            "&roles_outgoing=Shop+Manager")
    _, summary, _ = await console.get(f"setup/start?{query}{chosen}&direction=push")
    status, _, resp = await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit"),
        ("roles_outgoing", "customer, subscriber"), ("roles_incoming", "customer"),
        ("fields", "none"), ("fields", "first_name"), ("fields", "email"),
        ("initial_sync", "off")])

    assert re.search(r'id="f-roles_outgoing"[^>]*value=""', rules)
    for field in ("first_name", "description", "email"):
        assert re.search(f'id="fields-{field}"[^>]*checked', rules)
    assert re.search(r'id="initial_sync-on"[^>]*checked', rules)
    assert 400 == refused
    assert re.search(r'id="f-roles_outgoing-error"[^>]*>[^<]*got &#39;Shop&#39;, '
                     r'&#39;Manager&#39;; expected role slugs', refusal)
    assert re.search(r'id="summary-roles_outgoing">customer, subscriber<', summary)
    assert 'id="summary-roles_incoming"' not in summary  # a push link takes nothing
    assert re.search(r'id="summary-fields">first_name, email<', summary)
    assert re.search(r'id="summary-initial_sync">off', summary)
    assert 200 == status and str(resp.url).endswith("/console/links/a-b/progress")
    link = load(path).links["a-b"]
    assert (frozenset({"customer", "subscriber"}), None) == (link.roles_outgoing,
                                                             link.roles_incoming)
    assert (frozenset({"first_name", "email"}), False) == (link.fields, link.initial_sync)


async def test_the_link_edit_form_sets_and_clears_the_roles_fields_and_initial_sync(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    added, _, _ = await console.post("setup/start", [("site", "a"), ("remote", "b"),
                                                     ("sync", "users"), ("direction", "push")])
    assert 200 == added
    await wait_for_link(console, "a-b")
    link_form = [("link", "a-b"), ("site", "a"), ("remote", "b"), ("sync", "users"),
                 ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit"),
                 ("outgoing", "roles")]

    set_status, _, _ = await console.post("setup/start", [
        *link_form, ("direction", "bidirectional"), ("roles_outgoing", "customer"),
        ("roles_incoming", "subscriber"), ("fields", "none"), ("fields", "last_name"),
        ("initial_sync", "off")])
    edited = load(path).links["a-b"]
    await wait_for_link(console, "a-b")
    cleared_status, _, _ = await console.post("setup/start", [
        *link_form, ("direction", "push"), ("roles_outgoing", ""), ("initial_sync", "on")])
    cleared = load(path).links["a-b"]

    assert 200 == set_status and 200 == cleared_status
    assert ("bidirectional", frozenset({"customer"}), frozenset({"subscriber"})) == (
        edited.direction, edited.roles_outgoing, edited.roles_incoming)
    assert (frozenset({"last_name"}), False) == (edited.fields, edited.initial_sync)
    assert (None, None, True) == (cleared.roles_outgoing, cleared.roles_incoming,
                                  cleared.initial_sync)
    assert "roles" not in yaml.safe_load(path.read_text())["links"][0]


async def test_editing_a_link_shows_its_roles_fields_and_initial_sync_and_keeps_them(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("roles_outgoing", "customer"), ("fields", "none"), ("fields", "email"),
        ("initial_sync", "off")])
    await wait_for_link(console, "a-b")

    _, form, _ = await console.get("links/a-b/edit")
    # The form shows what the file says, so sending it back unchanged changes nothing else.
    assert 'id="rules-kept"' not in form
    assert 'name="roles_outgoing" value="customer"' in form
    assert 'value="email" checked' in form and 'value="description" checked' not in form
    assert 'value="off" checked' in form
    status, _, _ = await console.post("setup/start", [
        ("link", "a-b"), ("site", "a"), ("remote", "b"), ("sync", "users"),
        ("direction", "push"), ("outgoing", "none"), ("outgoing", "create"),
        ("roles_outgoing", "customer"), ("fields", "none"), ("fields", "email"),
        ("initial_sync", "off")])

    assert 200 == status
    link = load(path).links["a-b"]
    assert frozenset({"create"}) == link.outgoing
    assert (frozenset({"customer"}), frozenset({"email"}), False) == (
        link.roles_outgoing, link.fields, link.initial_sync)


async def test_a_session_outlives_a_restart_of_the_relay(
        console_relay: Any, admin_token: str) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await process.terminate()
    again = RelayProcess(path)
    await again.start()
    await again.logged("admin_started")
    try:
        status, text, _ = await console.get("")
    finally:
        await again.terminate()

    assert 200 == status and "Dashboard" in text


async def test_the_admin_api_adds_and_edits_a_link_and_refuses_one_between_untested_sites(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    await add_site(console, "a", a.url)
    await wait_until_known(console, "a")
    await add_site(console, "b", b.url)
    await wait_until_known(console, "b")
    headers = {"Authorization": f"Bearer {admin_token}"}
    api = console.base.replace("/console/", "/admin")

    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "push", "start": True}) as r:
            refused = r.status, await r.json()
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "sideways"}) as r:
            bad = r.status, await r.json()
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "push"}) as r:
            added = r.status, await r.json()
        await until(lambda: "a-b" in load(path).links)
        for _ in range(200):
            try:
                async with http.post(f"{api}/links/a-b/edit",
                                     json={"direction": "pull", "incoming": ["create"]}) as r:
                    edited = r.status, await r.json()
            except aiohttp.ClientError:  # the admin listener restarts with the reload
                edited = (0, None)
            if edited[0] not in (0, 404):
                break
            import asyncio
            await asyncio.sleep(0.05)

    assert 409 == refused[0] and refused[1]["missing"]
    assert "a-b" not in yaml.safe_load(path.read_text()).get("links", []) or added
    assert (400, "direction") == (bad[0], bad[1]["field"])
    assert 201 == added[0] and "started" == added[1]["reload"]
    assert 200 == edited[0], edited
    link = load(path).links["a-b"]
    assert ("pull", {"create"}) == (link.direction, set(link.incoming))


def test_the_vendored_files_are_those_recorded() -> None:
    recorded = (STATIC / "VENDORED.md").read_text()
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert f"`{name}`" in recorded and digest in recorded, name
    for licence in ("LICENSE-htmx.txt", "LICENSE-uPlot.txt"):
        assert (STATIC / licence).stat().st_size > 100
