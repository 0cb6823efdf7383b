"""A partner site's plugin, stood in for by a real HTTP server on loopback (aiohttp): it
answers the relay's signed deliveries, pings and nudges as the WordPress plugin does
(docs/protocol.md), checks the relay's signatures, and records what it receives.

For relay-level tests only; the real plugin on real WordPress is tests/e2e's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.errors import BadSignature
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import Direction

Responder = Callable[[dict[str, Any]], Awaitable[web.Response] | web.Response]


def as_plugin(key: SiteKey | None, headers: Any, body: bytes, operation: str,
              now: float | None = None) -> dict[str, Any]:
    """What a protocol-2 plugin checks of a relay's request: the relay -> site signature with
    ``key`` (``BadSignature`` if not), and a body naming ``operation``. Returns the body."""
    signatures.verify([key] if key else [], Direction.TO_SITE, headers.get("webhook-id"),
                      headers.get("webhook-timestamp"), headers.get("webhook-signature"), body,
                      300, now=now)
    document: dict[str, Any] = json.loads(body)
    assert document.get("operation") == operation, document.get("operation")
    return document


@dataclass
class Partner:
    """A real HTTP server standing in for a site's plugin; records what it receives."""

    key: SiteKey | None = None
    respond: Responder | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: TestServer | None = None
    next_user_id: int = 1000
    user_ids: dict[str, int] = field(default_factory=dict)
    # What its ping answers (docs/protocol.md, Ping): as the plugin on WordPress 6.1 does.
    site_id: str | None = None
    relay_url: str | None = None
    wordpress: str = "6.1.9"
    hash_formats: list[str] = field(default_factory=lambda: ["phpass", "bcrypt"])
    hash_formats_by_plugin: list[str] = field(default_factory=list)  # plugin 0.1.0+ on < 6.8
    clock_offset: float = 0.0
    nudges: list[float] = field(default_factory=list)  # when the relay nudged it
    # The site's roles, as its ping lists them (None: a plugin that lists none).
    roles: list[dict[str, str]] | None = field(default_factory=lambda: [
        {"slug": slug, "name": slug.title()}
        for slug in ("administrator", "editor", "author", "contributor", "subscriber")])

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in r["events"]]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.key is not None:
            document = as_plugin(self.key, request.headers, body, "events")
        else:
            document = json.loads(body)
        document["received_at"] = time.time()
        async with self.arrived:
            self.requests.append(document)
            self.arrived.notify_all()
        if self.respond is not None:
            response = self.respond(document)
            if asyncio.iscoroutine(response):
                response = await response
            return response  # type: ignore[return-value]
        return web.json_response({"results": [self.applied(e) for e in document["events"]]},
                                 headers={"userrelay-protocol": "2"})

    async def ping(self, request: web.Request) -> web.Response:
        """The plugin's signed ping, ``?check_relay=1`` included, on this site's clock."""
        now = time.time() + self.clock_offset
        date = {"Date": formatdate(now, usegmt=True), "userrelay-protocol": "2"}
        try:
            document = as_plugin(self.key, request.headers, await request.read(), "ping",
                                 now=now)
        except BadSignature as exc:
            code = ("userrelay_stale_timestamp" if exc.message.startswith("webhook-timestamp")
                    else "userrelay_bad_signature")
            return web.json_response({"code": code, "message": exc.message,
                                      "data": {"status": 401}}, status=401, headers=date)
        answer: dict[str, Any] = {"site": self.site_id, "wordpress": self.wordpress,
                                  "plugin": "0.1.0", "hash_formats": self.hash_formats,
                                  "hash_formats_by_plugin": self.hash_formats_by_plugin,
                                  "time": now}
        if self.roles is not None:
            answer["roles"] = self.roles
        if document.get("check_relay"):
            answer["relay_check"] = await self.check_relay(now)
        return web.json_response(answer, headers=date)

    async def check_relay(self, now: float) -> dict[str, Any]:
        """What the plugin reports of its own signed ping to the relay."""
        import aiohttp
        url = self.relay_url or ""
        assert self.key is not None
        try:
            body = json.dumps(signatures.envelope("ping", str(self.site_id))).encode()
            async with aiohttp.ClientSession() as session, session.post(
                    f"{url}/v1/sites/{self.site_id}/ping", data=body,
                    headers=signatures.headers(self.key, body, Direction.TO_RELAY,
                                               now=now)) as resp:
                status, body = resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError) as exc:
            return {"url": url, "status": None, "error": f"cURL error 7: {exc}"}
        return {"url": url, "status": status,
                "error": None if status == 200 else body.get("error")}

    async def nudge(self, request: web.Request) -> web.Response:
        """The plugin's nudge route: records that the relay asked it to send its outbox."""
        as_plugin(self.key, request.headers, await request.read(), "nudge")
        async with self.arrived:
            self.nudges.append(time.time())
            self.arrived.notify_all()
        return web.json_response({"waiting": 0}, status=202,
                                 headers={"userrelay-protocol": "2"})

    def applied(self, e: dict[str, Any]) -> dict[str, Any]:
        """The answer of a plugin that applied the event to a user of its own."""
        email = e["user"]["email"]
        if email not in self.user_ids:
            self.next_user_id += 1
            self.user_ids[email] = self.next_user_id
        return {"id": e["id"], "status": 200, "user_id": self.user_ids[email]}

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(predicate), timeout)
