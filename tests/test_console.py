"""The web console: sign-in and session, CSRF, the Content-Security-Policy, a session across a
restart, and the vendored files. The wizard and the admin API it drives:
tests/test_console_wizard.py."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from relay.web.console import session as sessions
from tests.support import RelayProcess

STATIC = Path(__file__).resolve().parents[1] / "relay" / "web" / "console" / "static"


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


def test_the_vendored_files_are_those_recorded() -> None:
    recorded = (STATIC / "VENDORED.md").read_text()
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert f"`{name}`" in recorded and digest in recorded, name
    for licence in ("LICENSE-htmx.txt", "LICENSE-uPlot.txt"):
        assert (STATIC / licence).stat().st_size > 100
