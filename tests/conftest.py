"""Shared fixtures: a relay on real SQLite files, and real HTTP servers standing in for sites."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.app import create_app
from relay.config import Config
from tests.support import Partner, Relay, Responder, generate_keys, settings, site


@pytest.fixture
async def partner_factory(aiohttp_server: Any) -> Callable[..., Awaitable[Partner]]:
    async def make(respond: Responder | None = None) -> Partner:
        partner = Partner(respond=respond)
        app = web.Application()
        app.router.add_post("/wp-json/userrelay/v1/events", partner.handle)
        partner.server = await aiohttp_server(app)
        return partner
    return make


@pytest.fixture
async def relay_factory(aiohttp_client: Any) -> Callable[[Config], Awaitable[Relay]]:
    async def make(config: Config) -> Relay:
        keys = generate_keys(config)
        client = await aiohttp_client(create_app(config))
        return Relay(config, client, keys)
    return make


@pytest.fixture
async def two_sites(partner_factory: Any, relay_factory: Any, tmp_path: Path) -> Any:
    """Site ``a`` pushes everything to site ``b`` (a partner server); returns (relay, b)."""
    async def make(responder: Responder | None = None, ingest: dict[str, Any] | None = None,
                   **delivery: Any) -> tuple[Relay, Partner]:
        b = await partner_factory(responder)
        config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                          [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                            "outgoing": ["create", "edit", "delete", "password", "roles",
                                         "metadata"]}], ingest, **delivery)
        relay = await relay_factory(config)
        b.key = relay.keys["b"]
        return relay, b
    return make
