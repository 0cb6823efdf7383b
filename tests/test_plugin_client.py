"""The one door to a plugin (relay/sites/client.py): whole answers, and no more than asked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.keys.crypto import SiteKey
from relay.sites.client import PluginClient


async def slow_big_answer(request: web.Request) -> web.StreamResponse:
    """A page of users written in pieces, as a busy PHP worker flushes it."""
    body = json.dumps({"users": [{"id": i, "bio": "x" * 2000} for i in range(400)]}).encode()
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    for start in range(0, len(body), 50_000):
        await resp.write(body[start:start + 50_000])
        await asyncio.sleep(0.01)
    await resp.write_eof()
    return resp


async def client_for(aiohttp_server: Any) -> tuple[PluginClient, aiohttp.ClientSession]:
    app = web.Application()
    app.router.add_post("/wp-json/userrelay/v1/users", slow_big_answer)
    server = await aiohttp_server(app)
    session = aiohttp.ClientSession()
    return PluginClient("a", str(server.make_url("")).rstrip("/"), SiteKey.generate(), session,
                        10), session


async def test_an_answer_written_in_pieces_is_read_whole(aiohttp_server: Any) -> None:
    client, session = await client_for(aiohttp_server)
    try:
        reply = await client.call("users", after=0, limit=400)
    finally:
        await session.close()

    assert 400 == len(reply.json()["users"])


async def test_an_answer_over_the_limit_is_refused(aiohttp_server: Any) -> None:
    client, session = await client_for(aiohttp_server)
    try:
        with pytest.raises(aiohttp.ClientPayloadError, match="larger than 100000 bytes"):
            await client.call("users", max_answer=100_000, after=0, limit=400)
    finally:
        await session.close()
