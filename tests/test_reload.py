"""SIGHUP (systemctl reload): the configuration file is read again without losing anything.

A valid new file takes effect (a new link delivers); what was accepted before is still
delivered after; a broken file is reported, problem by problem, and the running one stays.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay import config as config_module
from relay.db.links import LinkBook
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config


def document(tmp_path: Path, b_url: str, c_url: str, links: list[dict[str, Any]]
             ) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.1], "jitter": 0, "timeout": 5, "lease": 10,
                     "shutdown_grace": 0.5},
        "sites": [{"id": "a", "url": "http://127.0.0.1:7", "allow_http": True},
                  {"id": "b", "url": b_url, "allow_http": True},
                  {"id": "c", "url": c_url, "allow_http": True}],
        "links": links,
    }


A_TO_B = {"id": "a-b", "site": "a", "remote": "b", "direction": "push"}
A_TO_C = {"id": "a-c", "site": "a", "remote": "c", "direction": "push"}


def states(tmp_path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(tmp_path / "relay.sqlite3") as conn:
        return conn.execute("SELECT event_id, target, state FROM deliveries ORDER BY id"
                            ).fetchall()


async def logged(relay: RelayProcess, event_name: str, count: int = 1,
                 timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in relay.lines if line.get("event") == event_name]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"the relay logged {len(lines)} x {event_name!r}, not {count}")
        await asyncio.sleep(0.02)


async def test_a_reload_applies_a_new_link_and_delivers_what_was_accepted_before(
        partner_factory: Any, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow_at_first(document: dict[str, Any]) -> web.Response:
        if len(b.requests) == 1:
            await release.wait()  # still in flight when the reload begins
        return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": 7}
                                              for e in document["events"]]})
    b = await partner_factory(slow_at_first)
    c = await partner_factory()
    path = write_config(tmp_path / "relay.yaml", document(tmp_path, b.url, c.url, [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    try:
        status, _ = await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
        await b.wait_for(lambda: len(b.requests) == 1)
        write_config(path, document(tmp_path, b.url, c.url, [A_TO_B, A_TO_C]))
        with LinkBook(config_module.load(path)) as book:
            book.start("a-c")  # as an admin would, once the link is in the file
        assert relay.process is not None
        relay.process.send_signal(signal.SIGHUP)
        reloaded = (await logged(relay, "relay_reloaded"))[0]
        release.set()

        status_2, _ = await post_signed(relay.url, "a", keys["a"], [event("e2", 2, ["create"])])
        await c.wait_for(lambda: len(c.events) == 1)
        await b.wait_for(lambda: {"e1", "e2"} <= {e["origin"]["event_id"] for e in b.events})
    finally:
        release.set()
        assert 0 == await relay.terminate()

    assert (202, 202) == (status, status_2)
    assert ["a-b", "a-c"] == reloaded["links"]
    assert "e2" == c.events[0]["origin"]["event_id"]
    # e1 was in flight when the reload began: cut off after the grace, then sent again.
    assert 2 == [e["origin"]["event_id"] for e in b.events].count("e1")
    assert {("e1", "b", "done"), ("e2", "b", "done"), ("e2", "c", "done")} == \
        set(states(tmp_path))


async def test_a_broken_configuration_is_reported_and_the_running_one_stays(
        partner_factory: Any, tmp_path: Path) -> None:
    b = await partner_factory()
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    try:
        broken = document(tmp_path, b.url, "http://127.0.0.1:9",
                          [A_TO_B, {**A_TO_C, "remote": "nowhere"}])
        broken["delivery"]["batch_size"] = "lots"
        write_config(path, broken)
        assert relay.process is not None
        relay.process.send_signal(signal.SIGHUP)
        rejected = (await logged(relay, "reload_rejected"))[0]

        status, _ = await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
        await b.wait_for(lambda: len(b.events) == 1)
    finally:
        assert 0 == await relay.terminate()

    problems = [line["problem"] for line in relay.lines if line["event"] == "reload_problem"]
    assert 2 == rejected["problems"] == len(problems)
    assert any(p.startswith("delivery.batch_size: got 'lots'") for p in problems)
    assert any(p.startswith("links[1] (a-c).remote: got 'nowhere'") for p in problems)
    assert all(line["source"] == str(path) for line in relay.lines
               if line["event"] == "reload_problem")
    assert 202 == status
    assert ["relay_stopping"] == [line["event"] for line in relay.lines if line["event"] in
                                  ("relay_reloaded", "relay_stopping")]  # never restarted


async def test_a_reload_cannot_move_the_relay_to_another_port_or_database(
        tmp_path: Path) -> None:
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, "http://127.0.0.1:19", "http://127.0.0.1:9", [A_TO_B]))
    relay = RelayProcess(path)
    await relay.start()
    try:
        moved = document(tmp_path, "http://127.0.0.1:19", "http://127.0.0.1:9", [A_TO_B])
        moved["listen"]["port"] = relay.port + 1
        moved["database"] = str(tmp_path / "other.sqlite3")
        write_config(path, moved)
        assert relay.process is not None
        relay.process.send_signal(signal.SIGHUP)
        await logged(relay, "reload_rejected")
    finally:
        assert 0 == await relay.terminate()

    problems = [line["problem"] for line in relay.lines if line["event"] == "reload_problem"]
    assert [f"listen.port: got {relay.port + 1}; the running relay has 0, which only a "
            "restart changes (systemctl restart userrelay)",
            f"database: got '{tmp_path / 'other.sqlite3'}'; the running relay has "
            f"'{tmp_path / 'relay.sqlite3'}', which only a restart changes (systemctl restart "
            "userrelay)"] == problems
    assert not (tmp_path / "other.sqlite3").exists()


async def test_requests_sent_during_a_reload_wait_for_it_and_are_all_delivered(
        partner_factory: Any, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow_at_first(document: dict[str, Any]) -> web.Response:
        if len(b.requests) == 1:
            await release.wait()  # holds the old app for its whole shutdown grace
        return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": 7}
                                              for e in document["events"]]})
    b = await partner_factory(slow_at_first)
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    try:
        await post_signed(relay.url, "a", keys["a"], [event("e0", 100, ["create"])])
        await b.wait_for(lambda: len(b.requests) == 1)
        assert relay.process is not None
        relay.process.send_signal(signal.SIGHUP)
        statuses = []
        for i in range(1, 41):  # one every 25 ms, before, during and after the 0.5 s swap
            status, _ = await post_signed(relay.url, "a", keys["a"],
                                          [event(f"e{i}", i, ["create"])])
            statuses.append(status)
            await asyncio.sleep(0.025)
        await logged(relay, "relay_reloaded")
        release.set()
        await b.wait_for(lambda: len({e["origin"]["event_id"] for e in b.events}) == 41)
    finally:
        release.set()
        assert 0 == await relay.terminate()

    assert [202] * 40 == statuses
    assert {"done"} == {state for _, _, state in states(tmp_path)}


async def test_a_configuration_that_cannot_start_is_undone_and_the_old_one_serves(
        partner_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERRELAY_ADMIN_TOKEN", "t" * 40)  # so that the admin API listens
    b = await partner_factory()
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        try:
            valid_but_taken = {**document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]),
                               "admin": {"port": port}}
            write_config(path, valid_but_taken)
            assert relay.process is not None
            relay.process.send_signal(signal.SIGHUP)
            await logged(relay, "reload_failed")

            status, _ = await post_signed(relay.url, "a", keys["a"],
                                          [event("e1", 1, ["create"])])
            await b.wait_for(lambda: len(b.events) == 1)
        finally:
            assert 0 == await relay.terminate()

    problems = [line["problem"] for line in relay.lines if line["event"] == "reload_problem"]
    assert 1 == len(problems)
    assert problems[0].startswith(f"cannot listen on 127.0.0.1:{port} for the admin API")
    assert problems[0].lower().endswith("address already in use")
    assert 202 == status
    assert 2 == len([line for line in relay.lines if line["event"] == "admin_started"])


@pytest.mark.parametrize(("broken", "expected"), [
    (b"sites:\n  - id: a\n    label: caf\xe9\n", "not UTF-8 text"),
    (b"links:\n  - id: a-b\n    site: [a]\n    remote: b\n    direction: push\n",
     "links[0] (a-b).site: got ['a']"),
    (b"sites:\n  - id: a\n    url: http://[::1\n    allow_http: true\n", "not a URL"),
    (b"sites: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"sites: " + b"[" * 30 + b"]" * 30 + b"\n", "nested too deeply"),
    (b"links: []\nlinks: []\n", "the key 'links' is given twice"),
])
async def test_a_reload_of_any_malformed_file_keeps_the_relay_answering(
        partner_factory: Any, tmp_path: Path, broken: bytes, expected: str) -> None:
    b = await partner_factory()
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    try:
        path.write_bytes(broken)
        assert relay.process is not None
        relay.process.send_signal(signal.SIGHUP)
        await logged(relay, "reload_rejected")
        relay.process.send_signal(signal.SIGHUP)  # and again: still alive, still deaf to it
        await logged(relay, "reload_rejected", count=2)

        status, _ = await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
        await b.wait_for(lambda: len(b.events) == 1)
    finally:
        assert 0 == await relay.terminate()

    problems = [line["problem"] for line in relay.lines if line["event"] == "reload_problem"]
    assert 202 == status
    assert 2 == len([line for line in relay.lines if line["event"] == "reload_rejected"])
    assert any(expected in p for p in problems), problems
    assert not any("Traceback" in raw for raw in relay.raw)


async def test_no_request_fails_while_reloads_follow_each_other_under_load(
        partner_factory: Any, tmp_path: Path) -> None:
    b = await partner_factory()
    path = write_config(tmp_path / "relay.yaml",
                        document(tmp_path, b.url, "http://127.0.0.1:9", [A_TO_B]))
    keys = generate_keys(config_module.load(path))
    relay = RelayProcess(path)
    await relay.start()
    statuses: list[int | str] = []
    reloading = True

    async def client(n: int) -> None:
        i = 0
        while reloading:
            i += 1
            try:
                status, _ = await post_signed(relay.url, "a", keys["a"],
                                              [event(f"c{n}-{i}", 1000 * n + i, ["create"])])
            except Exception as exc:  # noqa: BLE001 - what a site's plugin would see: a failed send
                statuses.append(f"{type(exc).__name__}: {exc}")
            else:
                statuses.append(status)
    try:
        clients = [asyncio.create_task(client(n)) for n in range(8)]
        assert relay.process is not None
        for count in range(1, 21):
            relay.process.send_signal(signal.SIGHUP)
            await logged(relay, "relay_reloaded", count=count)
        reloading = False
        await asyncio.gather(*clients)
    finally:
        reloading = False
        assert 0 == await relay.terminate()

    assert len(statuses) > 40
    assert {202} == set(statuses), [s for s in statuses if s != 202][:5]
