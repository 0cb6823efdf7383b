"""Test helpers: relay settings, events as plugins send them, and a partner site stand-in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay import config as config_module
from relay import signatures
from relay.config import Config
from relay.crypto import SiteKey
from relay.keystore import KeyStore

Responder = Callable[[dict[str, Any]], Awaitable[web.Response] | web.Response]


def settings(tmp_path: Path, sites: list[dict[str, Any]], links: list[dict[str, Any]],
             ingest: dict[str, Any] | None = None, **delivery: Any) -> Config:
    """A relay configuration on a fresh database in ``tmp_path``, with quick retries."""
    document = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.05], "jitter": 0, "timeout": 5, "lease": 10,
                     "shutdown_grace": 2, **delivery},
        "ingest": ingest or {},
        "sites": sites,
        "links": links,
    }
    return config_module.from_mapping(document, base_dir=tmp_path)


def site(site_id: str, url: str) -> dict[str, Any]:
    return {"id": site_id, "label": site_id.title(), "url": url, "allow_http": True}


def event(event_id: str, user_id: int, actions: list[str], email: str | None = None,
          **user: Any) -> dict[str, Any]:
    """An event as a plugin reports it (docs/protocol.md)."""
    body: dict[str, Any] = {"id": f"user-{user_id}", "login": f"user{user_id}",
                            "email": email or f"user{user_id}@example.test",
                            "first_name": "", "last_name": "", "display_name": f"User {user_id}"}
    body["id"] = user_id
    if "roles" in actions:
        body["roles"] = ["subscriber"]
    if "password" in actions:
        body["password_hash"] = "$P$Bexamplehashexamplehashexampl"
    body.update(user)
    return {"id": event_id, "occurred_at": time.time(), "actions": actions, "user": body}


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
            h = request.headers
            signatures.verify([self.key], h.get("webhook-id"), h.get("webhook-timestamp"),
                              h.get("webhook-signature"), body, 300)
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
        return web.json_response({"results": [self.applied(e) for e in document["events"]]})

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


@dataclass
class Relay:
    config: Config
    client: TestClient
    keys: dict[str, SiteKey]

    async def post(self, site_id: str, events: list[dict[str, Any]],
                   webhook_id: str | None = None, key: SiteKey | None = None,
                   timestamp: float | None = None) -> tuple[int, Any]:
        body = json.dumps({"events": events}).encode()
        headers = signatures.headers(key or self.keys[site_id], body, webhook_id, timestamp)
        resp = await self.client.post(f"/v1/sites/{site_id}/events", data=body, headers=headers)
        return resp.status, await resp.json()

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3
        with sqlite3.connect(self.config.database_path) as conn:
            return conn.execute(sql, params).fetchall()


def generate_keys(config: Config) -> dict[str, SiteKey]:
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        return {site_id: store.generate(site_id) for site_id in config.sites}
    finally:
        store.close()


