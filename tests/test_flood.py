"""Unauthenticated floods: idle connections past the relay's connection limit, and clients
that open a connection and send their headers too slowly (relay/web/guard.py).

The relay runs in this process on a real listener, with a small connection limit so that a
hundred connections are a flood.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from relay.web import guard
from relay.web.app import create_app
from tests.relay_settings import settings, site
from tests.support import Relay, event, generate_keys

LIMIT = 20


async def small_relay(tmp_path: Path, partner_factory: Any, aiohttp_client: Any,
                      idle_timeout: float = guard.IDLE_TIMEOUT) -> tuple[Relay, Any]:
    b = await partner_factory()
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                        "outgoing": ["create"]}])
    keys = generate_keys(config)
    app = create_app(config)
    guard.limit_connections(app, LIMIT, idle_timeout)
    relay = Relay(config, await aiohttp_client(app), keys)
    b.key, b.site_id, b.relay_url = keys["b"], "b", relay.url
    return relay, b


async def test_idle_connections_past_the_limit_starve_neither_health_nor_sites(
        tmp_path: Path, partner_factory: Any, aiohttp_client: Any) -> None:
    relay, b = await small_relay(tmp_path, partner_factory, aiohttp_client)
    runner = relay.client.server.runner
    assert runner is not None and runner.server is not None
    server = runner.server
    idle = []
    for _ in range(5 * LIMIT):  # connect and say nothing
        _, writer = await asyncio.open_connection("127.0.0.1", relay.client.port)
        idle.append(writer)
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                    session.get(f"{relay.url}/healthz") as resp):
            health = resp.status
        status, _ = await relay.post("a", [event("e1", 1, ["create"])])
        open_connections = len(server.connections)
    finally:
        for writer in idle:
            writer.close()

    assert (200, 202) == (health, status)
    assert open_connections <= LIMIT + 1
    await b.wait_for(lambda: len(b.events) == 1)


async def test_a_connection_that_never_completes_its_headers_is_closed(
        tmp_path: Path, partner_factory: Any, aiohttp_client: Any) -> None:
    relay, _ = await small_relay(tmp_path, partner_factory, aiohttp_client, idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.client.port)
    started = time.monotonic()

    writer.write(b"POST /v1/sites/a/events HTTP/1.1\r\nHost: relay\r\n")  # and nothing more
    closed = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert b"" == closed
    assert time.monotonic() - started >= 0.5
