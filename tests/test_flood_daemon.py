"""Floods against a real relay process: what an unauthenticated client can cost the daemon's
own listener (relay/web/guard.py, relay/web/ingest.py), under the file limit systemd would set."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from relay import config as config_module
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config


def relay_config(tmp_path: Path, partner_url: str, **ingest: Any) -> Path:
    return write_config(tmp_path / "relay.yaml", {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "ingest": ingest,
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": partner_url, "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}],
    })


async def test_idle_connections_past_the_file_limit_leave_the_daemon_answering(
        partner_factory: Any, tmp_path: Path) -> None:
    b = await partner_factory()
    path = relay_config(tmp_path, b.url)
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path, file_limit=256)
    await relay.start()
    idle = []
    try:
        for _ in range(400):  # connect and say nothing: more than the process has files
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            idle.append(writer)
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                    session.get(f"{relay.url}/healthz") as resp):
            health = resp.status
        status, _ = await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
    finally:
        for writer in idle:
            writer.close()
        await relay.terminate()

    assert (200, 202) == (health, status)


async def test_unsigned_bodies_are_refused_before_they_are_read(
        partner_factory: Any, tmp_path: Path) -> None:
    """600 unsigned bodies of 1 MB at once: all refused, and the memory they took while in
    flight is given back (what is left is the allocator's, not the bodies)."""
    b = await partner_factory()
    relay = RelayProcess(relay_config(tmp_path, b.url))
    await relay.start()
    body = b"x" * 1_000_000
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await session.get(f"{relay.url}/healthz")
            before = relay.rss_mib()

            async def send() -> None:
                async with session.post(f"{relay.url}/v1/sites/a/events", data=body) as resp:
                    statuses.append(resp.status)
            await asyncio.gather(*(send() for _ in range(600)))
        settled = [relay.rss_mib()]
        deadline = time.monotonic() + 10
        while settled[-1] - before >= 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # what it settles at, once the connections are gone
            settled.append(relay.rss_mib())
    finally:
        await relay.terminate()

    assert {401} == set(statuses) and 600 == len(statuses)
    assert min(settled) - before < 30, f"RSS {before:.0f} MiB before, {min(settled):.0f} after"


async def test_a_body_that_arrives_too_slowly_is_cut_off(partner_factory: Any,
                                                        tmp_path: Path) -> None:
    b = await partner_factory()
    relay = RelayProcess(relay_config(tmp_path, b.url, body_timeout="1s"))
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        now = int(time.time())
        writer.write(("POST /v1/sites/a/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n"
                      f"webhook-id: msg_slow\r\nwebhook-timestamp: {now}\r\n"
                      "webhook-signature: v1,AAAA\r\nuserrelay-protocol: 2\r\n\r\n{\"ev"
                      ).encode())
        await writer.drain()
        started = time.monotonic()
        status_line = await asyncio.wait_for(reader.readline(), 20)
        waited = time.monotonic() - started
        writer.close()
    finally:
        await relay.terminate()

    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert waited < 10
