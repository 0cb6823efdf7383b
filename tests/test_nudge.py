"""The relay tells sites it is back (relay/work/nudge.py): a plugin waiting out a backoff step
sends its outbox at once instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from relay import config as config_module
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config


def relay_config(tmp_path: Path, a_url: str, b_url: str) -> Path:
    return write_config(tmp_path / "relay.yaml", {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.2], "jitter": 0, "timeout": 5},
        "sites": [{"id": "a", "url": a_url, "allow_http": True},
                  {"id": "b", "url": b_url, "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}],
    })


async def test_a_started_relay_nudges_every_site_it_holds_a_key_for(
        partner_factory: Any, tmp_path: Path) -> None:
    a, b = await partner_factory(), await partner_factory()
    path = relay_config(tmp_path, a.url, b.url)
    keys = generate_keys(config_module.load(path))
    a.key, b.key = keys["a"], keys["b"]
    relay = RelayProcess(path)
    await relay.start()
    try:
        await a.wait_for(lambda: len(a.nudges) == 1)
        await b.wait_for(lambda: len(b.nudges) == 1)
    finally:
        await relay.terminate()


async def test_a_site_whose_deliveries_succeed_again_is_nudged(
        partner_factory: Any, tmp_path: Path) -> None:
    down = [True]

    def respond(document: dict[str, Any]) -> web.Response:
        if down[0]:
            return web.json_response({"error": "maintenance"}, status=503)
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    a = await partner_factory()
    b = await partner_factory(respond)
    path = relay_config(tmp_path, a.url, b.url)
    keys = generate_keys(config_module.load(path))
    a.key, b.key = keys["a"], keys["b"]
    relay = RelayProcess(path)
    await relay.start()
    try:
        await b.wait_for(lambda: len(b.nudges) == 1)  # the start's
        await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
        await b.wait_for(lambda: len(b.requests) >= 2)  # refused twice: b is failing
        assert 1 == len(b.nudges)
        down[0] = False
        await b.wait_for(lambda: len(b.nudges) == 2, timeout=20)
    finally:
        await relay.terminate()
