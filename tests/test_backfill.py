"""A link's initial sync: the users a site already has are read page by page, in user ID
order, and go through the queue like live events; the cursor survives a restart, a page read
again queues nothing twice, and no page is read while the target has enough to take."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay import config as config_module
from relay.cli.main import main
from relay.config import Config, Link
from relay.db import cursors, status
from relay.db.links import LinkBook
from relay.db.store import connect_sync
from relay.keys.crypto import SiteKey
from relay.web.app import create_app
from relay.work import initial_sync
from tests.partner import Partner, as_plugin
from tests.relay_settings import site
from tests.support import Relay, generate_keys, secret, until

EVERYTHING = ["create", "edit", "delete", "password", "roles", "metadata"]


@dataclass
class Directory:
    """A site's plugin as the initial sync sees it: its signed ``GET …/users``."""

    users: dict[int, dict[str, Any]]
    key: SiteKey | None = None
    asked: list[int] = field(default_factory=list)  # the ``after`` of each request
    failures: int = 0                               # answer 503 to this many requests first
    held: dict[int, asyncio.Event] = field(default_factory=dict)  # after -> until set
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def page(self, request: web.Request) -> web.Response:
        assert self.key is not None
        document = as_plugin(self.key, request.headers, await request.read(), "users")
        after, limit = int(document["after"]), int(document["limit"])
        self.asked.append(after)
        if after in self.held:
            await self.held[after].wait()
        if self.failures:
            self.failures -= 1
            return web.json_response({"code": "busy"}, status=503)
        ids = sorted(i for i in self.users if i > after)
        chosen = ids[:limit]
        more = len(ids) > limit
        return web.json_response({"users": [self.users[i] for i in chosen],
                                  "next": chosen[-1] if more else None,
                                  "scanned": len(chosen), "total": len(self.users)})


def a_user(user_id: int, modified: float = 1_700_000_000.0) -> dict[str, Any]:
    """A user as the plugin's directory lists it (docs/protocol.md, Initial sync)."""
    return {"id": user_id, "login": f"user{user_id}", "email": f"user{user_id}@example.test",
            "first_name": "First", "last_name": f"Last{user_id}", "display_name": f"U {user_id}",
            "registered": "2024-01-02 03:04:05", "roles": ["subscriber"],
            "password_hash": secret(f"$P$Bbackfillhash{user_id:016d}"),
            "meta": {"favourite_colour": "green"}, "modified": modified + user_id}


@pytest.fixture
async def world(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> Any:
    """Site ``a`` (a directory of ``count`` users) pushes everything to site ``b`` (a
    partner); returns (directory, b, config, start) where ``start()`` runs a relay on it."""
    async def make(count: int, responder: Any = None, direction: str = "push",
                   outgoing: list[str] = EVERYTHING, **backfill_settings: Any
                   ) -> tuple[Directory, Partner, Config, Any]:
        directory = Directory({i: a_user(i) for i in range(1, count + 1)})
        app = web.Application()
        app.router.add_post("/wp-json/userrelay/v1/users", directory.page)
        directory.server = await aiohttp_server(app)
        b = Partner(respond=responder)
        b_app = web.Application()
        b_app.router.add_post("/wp-json/userrelay/v1/events", b.handle)
        b.server = await aiohttp_server(b_app)
        config = config_module.from_mapping({
            "listen": {"host": "127.0.0.1", "port": 0}, "admin": {"port": 0},
            "database": str(tmp_path / "relay.sqlite3"),
            "delivery": {"retry_schedule": [0.05], "jitter": 0, "timeout": 5, "lease": 10,
                         "shutdown_grace": 2},
            "initial_sync": {"page_size": 10, **backfill_settings},
            "sites": [site("a", directory.url), site("b", b.url)],
            "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": direction,
                       "outgoing": outgoing, "incoming": EVERYTHING}]}, base_dir=tmp_path)
        keys = generate_keys(config)  # both sites tested, the link started: the sync begins
        directory.key, b.key = keys["a"], keys["b"]

        async def start() -> Relay:
            client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
            return Relay(config, client, keys)
        return directory, b, config, start
    return make


def progress(config: Config) -> dict[str, Any]:
    with LinkBook(config) as book:
        found = book.call(cursors.progress, config, "a-b")
    assert found is not None
    return found


def backfilled(b: Partner) -> list[int]:
    """The source user ids of the initial sync's events b received, in order of arrival."""
    return [int(e["origin"]["event_id"].rsplit("-", 1)[1]) for e in b.events
            if e.get("backfill")]


async def test_a_started_link_sends_every_existing_user_once_in_id_order_as_a_create(
        world: Any) -> None:
    directory, b, config, start = await world(25)
    await start()

    await b.wait_for(lambda: len(backfilled(b)) == 25)

    assert list(range(1, 26)) == sorted(backfilled(b))
    assert [0, 10, 20] == directory.asked
    first = next(e for e in b.events if e["origin"]["event_id"] == "backfill-a-b-1-1")
    assert ["create", "password", "roles", "metadata"] == first["actions"]
    assert {"origin": {"site": "a", "event_id": "backfill-a-b-1-1"}, "backfill": True,
            "occurred_at": 1_700_000_001.0} == {k: first[k] for k in
                                                ("origin", "backfill", "occurred_at")}
    assert "$P$Bbackfillhash0000000000000001" == first["user"]["password_hash"]
    assert {"favourite_colour": "green"} == first["user"]["meta"]
    await until(lambda: progress(config)["state"] == "completed")
    done = progress(config)
    assert (25, 25, None) == (done["done"], done["total"], done["seconds_left"])
    assert done["rate"] > 0


async def test_the_link_rules_apply_a_push_link_without_password_sends_no_hash(
        world: Any, tmp_path: Path) -> None:
    directory, b, config, start = await world(3, outgoing=["create", "roles"])
    await start()

    await b.wait_for(lambda: len(backfilled(b)) == 3)

    assert {("create", "roles")} == {tuple(e["actions"]) for e in b.events}
    assert not any("password_hash" in e["user"] or "meta" in e["user"] for e in b.events)


async def test_a_restart_carries_on_from_the_cursor_and_sends_nobody_twice(world: Any) -> None:
    directory, b, config, start = await world(30)
    directory.held[10] = asyncio.Event()
    relay = await start()
    await until(lambda: directory.asked == [0, 10])
    await relay.client.close()  # the relay stops mid-way, while the second page is read
    assert 10 == progress(config)["sources"]["a"]["after"]

    directory.held[10].set()
    await start()
    await b.wait_for(lambda: len(backfilled(b)) == 30)
    await until(lambda: progress(config)["state"] == "completed")

    assert list(range(1, 31)) == sorted(backfilled(b))  # each once
    assert [0, 10, 10, 20] == directory.asked  # on from the cursor: the first page not again


async def test_a_page_read_again_queues_nothing_twice(world: Any) -> None:
    directory, b, config, start = await world(12)
    await start()
    await until(lambda: progress(config)["state"] == "completed")
    with sqlite3.connect(config.database_path) as conn:  # as if the cursor had not moved
        conn.execute("UPDATE backfills SET after = 0, finished_at = NULL, completed_at = NULL")

    await until(lambda: directory.asked.count(0) == 2 and progress(config)["state"]
                == "completed")

    assert list(range(1, 13)) == sorted(backfilled(b))


async def test_no_page_is_read_while_the_target_has_two_pages_waiting(world: Any) -> None:
    held = asyncio.Event()

    async def slow(document: dict[str, Any]) -> web.Response:
        await held.wait()
        return web.json_response({"results": [{"id": e["id"], "status": 200}
                                              for e in document["events"]]})
    directory, b, config, start = await world(50, slow, page_size=10, window=2)
    await start()

    await until(lambda: progress(config)["sources"]["a"]["pending"] >= 20)
    await asyncio.sleep(0.3)  # a negative: the runner looks every 0.1 s; give it a few looks
    assert [0, 10] == directory.asked
    midway = progress(config)
    assert (0, 50, "running") == (midway["done"], midway["total"], midway["state"])

    held.set()
    await until(lambda: progress(config)["state"] == "completed")
    assert [0, 10, 20, 30, 40] == directory.asked


async def test_an_unreadable_page_is_asked_again_from_the_same_cursor_and_reported(
        world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initial_sync, "RETRY_FIRST", 0.2)
    directory, b, config, start = await world(5)
    directory.failures = 1
    await start()

    await until(lambda: progress(config)["sources"]["a"]["last_error"] is not None)
    assert "answered 503" in progress(config)["sources"]["a"]["last_error"]
    await until(lambda: progress(config)["state"] == "completed")
    assert [0, 0] == directory.asked
    assert progress(config)["sources"]["a"]["last_error"] is None


async def test_only_the_first_start_of_a_link_begins_a_sync(world: Any) -> None:
    directory, b, config, start = await world(3)
    with LinkBook(config) as book:
        book.pause("a-b")
        book.start("a-b")
    with sqlite3.connect(config.database_path) as conn:
        assert [(1,)] == conn.execute("SELECT generation FROM backfills").fetchall()


@pytest.mark.parametrize(("direction", "sources"), [
    ("push", ["a"]), ("pull", ["b"]), ("bidirectional", ["a", "b"])])
def test_the_sync_reads_the_sites_changes_flow_from(direction: str, sources: list[str]) -> None:
    assert sources == cursors.sources_of(Link("a-b", "a", "b", direction))


async def test_progress_shows_done_of_total_in_the_cli_and_in_the_status(
        world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory, b, config, start = await world(8)
    config_file = tmp_path / "relay.yaml"
    config_file.write_text(json.dumps({
        "database": str(config.database_path),
        "sites": [site("a", directory.url), site("b", b.url)],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]}))
    await start()
    await until(lambda: progress(config)["state"] == "completed")

    assert 0 == main(["links", "progress", "a-b", "--config", str(config_file)])
    shown = capsys.readouterr().out
    assert "Link a-b initial sync #1: 8 of 8 users" in shown and "100%" in shown
    assert 0 == main(["links", "progress", "a-b", "--json", "--config", str(config_file)])
    assert 8 == json.loads(capsys.readouterr().out)["done"]
    conn = connect_sync(config.database_path)
    try:
        snapshot = status.snapshot(conn, config)
    finally:
        conn.close()
    assert (8, 8) == (snapshot["links"]["a-b"]["backfill"]["done"],
                      snapshot["links"]["a-b"]["backfill"]["total"])
    assert "initial sync #1: 8 of 8 users" in status.render(snapshot)


def test_the_bar_fills_with_the_share_done() -> None:
    shown = cursors.render("a-b", {"generation": 2, "state": "running", "done": 25,
                                    "total": 100, "rate": 5.0, "seconds_left": 15.0,
                                    "sources": {"a": {"last_error": None}}}, width=20)
    assert ("Link a-b initial sync #2: 25 of 100 users [#####...............] 25%, "
            "5.0 users/s, about 15s left") == shown
