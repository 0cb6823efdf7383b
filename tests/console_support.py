"""What the console's tests share: a signed-in browser-like client of the console (its cookies
and CSRF token, every page it saw kept for the secret checks), a real relay serving it, and
the wizard's steps of adding and testing sites and waiting for a link.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from relay.keys.crypto import SiteKey
from tests.support import RelayProcess, record, secret, secret_key

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
