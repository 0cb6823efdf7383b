"""Durability and shutdown, on a real relay process: nothing acknowledged is ever lost."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web

from relay import config as config_module
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config


def relay_config(tmp_path: Path, partner_url: str) -> Path:
    document = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.1], "jitter": 0, "timeout": 5, "lease": 10,
                     "shutdown_grace": 5},
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": partner_url, "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}],
    }
    return write_config(tmp_path / "relay.yaml", document)


def states(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "relay.sqlite3") as conn:
        return conn.execute("SELECT event_id, state FROM deliveries ORDER BY id").fetchall()


async def test_an_acknowledged_event_survives_a_crash_mid_delivery(
        partner_factory: Any, tmp_path: Path) -> None:
    up = asyncio.Event()

    async def respond(document: dict[str, Any]) -> web.Response:
        if not up.is_set():
            await asyncio.sleep(60)  # hangs: the delivery is leased when the relay dies
        return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": 3}
                                              for e in document["events"]]})
    b = await partner_factory(respond)
    path = relay_config(tmp_path, b.url)
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()

    status, _ = await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
    await b.wait_for(lambda: len(b.requests) == 1)
    await relay.kill()
    assert (202, [("e1", "leased")]) == (status, states(tmp_path))

    up.set()
    relay = RelayProcess(path)
    await relay.start()
    try:
        await b.wait_for(lambda: len(b.requests) == 2)
        assert "e1" == b.requests[1]["events"][0]["origin"]["event_id"]
    finally:
        assert 0 == await relay.terminate()
    assert [("e1", "done")] == states(tmp_path)


async def test_sigterm_stops_accepting_and_lets_in_flight_deliveries_finish(
        partner_factory: Any, tmp_path: Path) -> None:
    answering = asyncio.Event()

    async def respond(document: dict[str, Any]) -> web.Response:
        answering.set()
        await asyncio.sleep(0.5)  # still in flight when SIGTERM arrives
        return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": 3}
                                              for e in document["events"]]})
    b = await partner_factory(respond)
    path = relay_config(tmp_path, b.url)
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
    await asyncio.wait_for(answering.wait(), 10)

    code = await relay.terminate()

    assert 0 == code
    assert [("e1", "done")] == states(tmp_path)
    assert {"relay_stopping", "relay_stopped"} <= {line["event"] for line in relay.lines}
    try:
        await post_signed(relay.url, "a", keys["a"], [event("e2", 2, ["create"])])
    except OSError:
        pass  # refused: nothing listens any more
    else:
        raise AssertionError("the relay still accepted events after SIGTERM")


async def test_keys_and_password_hashes_never_reach_the_logs(
        partner_factory: Any, tmp_path: Path) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        return web.json_response({"error": f"bad hash {document['events'][0]['user']}"},
                                 status=422)
    b = await partner_factory(respond)
    path = relay_config(tmp_path, b.url)
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    secret_hash = "$P$BsecretsecretsecretsecretXYZ1"
    await post_signed(relay.url, "a", keys["b"], [event("e0", 1, ["create"])])  # wrong key
    await post_signed(relay.url, "a", keys["a"], [event(
        "e1", 1, ["create", "password"], password_hash=secret_hash)])
    await relay.logged("dead_lettered")
    await relay.terminate()

    everything = "".join(relay.raw)
    assert "dead_lettered" in everything and "request_rejected" in everything
    for secret in (keys["a"].secret, keys["b"].secret, secret_hash,
                   keys["a"].secret.removeprefix("whsec_")):
        assert secret not in everything
