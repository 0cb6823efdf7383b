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




class RelayProcess:
    """``userrelay serve`` as a real child process, its JSON log lines collected."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.port = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20) -> None:
        import sys
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "serve", "--config", str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        started = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(started))
        self.port = await asyncio.wait_for(started, timeout)

    async def _read(self, started: asyncio.Future[int]) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            text = raw.decode(errors="replace")
            self.raw.append(text)
            try:
                line = json.loads(text)
            except ValueError:
                continue
            self.lines.append(line)
            if line.get("event") == "relay_started" and not started.done():
                started.set_result(int(line["port"]))
        if not started.done():
            started.set_exception(AssertionError("the relay exited before it started:\n"
                                                 + "".join(self.raw)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def logged(self, event: str, timeout: float = 10) -> dict[str, Any]:
        """The first log line about ``event``, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            await asyncio.sleep(0.02)
        raise AssertionError(f"the relay logged no {event!r} within {timeout}s")

    async def kill(self) -> None:
        """Stop it uncleanly, as a crash or power cut would."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        if self._reader:
            await self._reader

    async def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader:
            await self._reader
        return code


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(config))
    return path


async def post_signed(url: str, site_id: str, key: SiteKey, events: list[dict[str, Any]],
                      webhook_id: str | None = None) -> tuple[int, Any]:
    import aiohttp
    body = json.dumps({"events": events}).encode()
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v1/sites/{site_id}/events", data=body,
            headers=signatures.headers(key, body, webhook_id)) as resp:
        return resp.status, await resp.json()


async def until(predicate: Any, timeout: float = 10) -> None:
    """Wait for a condition on the relay's database (polled: it changes in another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
