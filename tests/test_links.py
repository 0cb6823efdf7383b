"""Link states: a link delivers only once both its sites passed a connection test and it was
started; a new URL or key, or a pause, stops it; events queue meanwhile and then flow."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from relay.db import links, schema, store
from relay.db.links import LinkBook
from relay.errors import LinkNotReady
from relay.keys.keystore import KeyStore
from relay.sites.connection_report import record
from relay.sites.connection_test import run_connection_test
from relay.web.app import create_app
from relay.web.appkeys import LINKS
from tests.partner import Partner
from tests.relay_settings import settings, site
from tests.support import Relay, event, mark_tested, until

PUSH_ALL = {"id": "a-b", "site": "a", "remote": "b", "direction": "push",
            "outgoing": ["create", "edit", "delete", "password", "roles", "metadata"]}


def state(relay: Relay, link: str = "a-b") -> links.LinkState:
    with LinkBook(relay.config) as book:
        return book.state(link)


def passes_a_test(relay: Relay, site_id: str) -> None:
    """Site ``site_id`` passes a connection test (a stand-in that cannot answer one)."""
    keys = KeyStore(relay.config.database_path, relay.config.master_key_path)
    try:
        mark_tested(relay.config, keys, site_id)
    finally:
        keys.close()


async def connection_test(relay: Relay, site_id: str) -> bool:
    """A real connection test of ``site_id`` against its stand-in plugin, recorded."""
    keys = KeyStore(relay.config.database_path, relay.config.master_key_path)
    try:
        with LinkBook(relay.config) as book:
            report = await run_connection_test(relay.config, site_id, keys,
                                               tests=book.site_tests(), timeout=5)
            record(book, report)
    finally:
        keys.close()
    assert report.passed, [c for c in report.checks if c.status == "fail"]
    return report.passed


async def seen_by_the_relay(relay: Relay) -> None:
    """Wait until the running relay has re-read the link states (its gate refreshes)."""
    app = relay.client.app
    assert app is not None
    await app[LINKS].refresh()


async def nothing_delivered_while(relay: Relay, b: Partner) -> None:
    """Give the couriers the time to send, were they allowed to, and check they did not."""
    await seen_by_the_relay(relay)
    await asyncio.sleep(0.3)  # a negative: nothing to wait for but time
    assert [] == b.requests


async def test_a_new_link_is_a_draft_and_delivers_nothing_until_tested_and_started(
        two_sites: Any) -> None:
    relay, b = await two_sites(start_links=False)

    status, answer = await relay.post("a", [event("e1", 1, ["create"])])

    assert (202, 1) == (status, answer["deliveries"])  # ingest is unaffected: it queues
    assert ("draft", False) == (state(relay).state, state(relay).started)
    await nothing_delivered_while(relay, b)
    assert [("ready",)] == relay.db("SELECT state FROM deliveries")


async def test_start_refuses_naming_each_site_that_lacks_a_test(two_sites: Any) -> None:
    relay, b = await two_sites(start_links=False)
    passes_a_test(relay, "a")

    with LinkBook(relay.config) as book, pytest.raises(LinkNotReady) as refused:
        book.start("a-b")

    assert str(refused.value) == ("link 'a-b' cannot start: site 'b' has not passed a "
                                  "connection test yet; run userrelay sites test b")


async def test_once_both_sites_are_tested_and_the_link_started_queued_events_flow(
        two_sites: Any) -> None:
    relay, b = await two_sites(start_links=False)
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])
    passes_a_test(relay, "a")
    await connection_test(relay, "b")
    assert "tested" == state(relay).state
    await nothing_delivered_while(relay, b)  # tested is not started

    with LinkBook(relay.config) as book:
        assert "active" == book.start("a-b").state

    await b.wait_for(lambda: len(b.events) == 2)
    assert ["e1", "e2"] == [e["origin"]["event_id"] for e in b.events]


async def test_a_new_key_stops_the_sites_links_until_it_is_tested_again(two_sites: Any) -> None:
    relay, b = await two_sites()
    keys = KeyStore(relay.config.database_path, relay.config.master_key_path)
    b.key = keys.rotate("b")
    keys.close()

    await relay.post("a", [event("e1", 1, ["create"])])

    assert ("draft", True) == (state(relay).state, state(relay).started)
    assert state(relay).reason == ("site 'b' has not passed a connection test since its key "
                                   "changed; run userrelay sites test b")
    await nothing_delivered_while(relay, b)
    await connection_test(relay, "b")  # with the new key: the link was started, so it resumes

    await b.wait_for(lambda: len(b.events) == 1)


async def test_a_new_url_stops_the_sites_links_until_it_is_tested_again(
        partner_factory: Any, relay_factory: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    old, new = await partner_factory(), await partner_factory()
    first = await relay_factory(settings(tmp_path, [site("a", "http://127.0.0.1:9"),
                                                    site("b", old.url)], [PUSH_ALL]))
    await first.client.close()
    # The configuration edited (site b moved), the relay started again on the same database.
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", new.url)],
                      [PUSH_ALL])
    relay = Relay(config, await aiohttp_client(create_app(config)), first.keys)
    new.key, new.site_id, new.relay_url = first.keys["b"], "b", relay.url

    await relay.post("a", [event("e1", 1, ["create"])])

    assert state(relay).reason == ("site 'b' has not passed a connection test since its URL "
                                   f"changed (to {new.url}); run userrelay sites test b")
    await nothing_delivered_while(relay, new)
    await connection_test(relay, "b")

    await new.wait_for(lambda: len(new.events) == 1)
    assert [] == old.requests


async def test_pause_stops_delivery_and_start_resumes_it(two_sites: Any) -> None:
    relay, b = await two_sites()
    with LinkBook(relay.config) as book:
        paused = book.pause("a-b", "moving the shop to a new server")
    assert ("paused", "moving the shop to a new server") == (paused.state, paused.reason)

    await relay.post("a", [event("e1", 1, ["create"])])
    await nothing_delivered_while(relay, b)
    with LinkBook(relay.config) as book:
        book.start("a-b")

    await b.wait_for(lambda: len(b.events) == 1)


async def test_a_link_paused_by_a_410_is_resumed_by_start(two_sites: Any) -> None:
    gone = asyncio.Event()

    def respond(document: dict[str, Any]) -> web.Response:
        if not gone.is_set():
            gone.set()
            return web.json_response({}, status=410)
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond)
    await relay.post("a", [event("e1", 1, ["create"])])
    await until(lambda: state(relay).state == "paused")
    assert (state(relay).reason or "").startswith("site 'b' answered 410 Gone")

    with LinkBook(relay.config) as book:
        book.start("a-b")

    await b.wait_for(lambda: len(b.events) == 2)  # the refused one, then again, taken
    await until(lambda: relay.db("SELECT state FROM deliveries") == [("done",)])


async def test_links_start_and_pause_from_the_command_line_reach_the_running_relay(
        two_sites: Any, tmp_path: Path) -> None:
    relay, b = await two_sites()
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": str(relay.config.database_path),
        "sites": [{"id": s.id, "url": s.url, "allow_http": True}
                  for s in relay.config.sites.values()],
        "links": [PUSH_ALL]}))

    def userrelay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay", *args, "--config", str(path)],
                              capture_output=True, text=True, check=False)

    paused = userrelay("links", "pause", "a-b", "--reason", "maintenance")
    assert 0 == paused.returncode, paused.stderr
    assert "Link a-b (a -> b, push): paused: maintenance" in paused.stdout
    await until(lambda: relay.client.server.app[LINKS].deliverable(["a-b"]) == [], timeout=5)
    await relay.post("a", [event("e1", 1, ["create"])])
    await asyncio.sleep(0.3)  # a negative: nothing to wait for but time
    assert [] == b.requests

    started = userrelay("links", "start", "a-b")

    assert 0 == started.returncode, started.stderr
    assert "Link a-b (a -> b, push): active, delivering" in started.stdout
    await b.wait_for(lambda: len(b.events) == 1, timeout=5)  # the relay re-reads every second


def test_links_start_refuses_on_the_command_line_saying_what_to_run(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": "relay.sqlite3",
        "sites": [{"id": "a", "url": "https://a.example.test"},
                  {"id": "b", "url": "https://b.example.test"}],
        "links": [PUSH_ALL]}))

    result = subprocess.run([sys.executable, "-m", "relay", "links", "start", "a-b", "--config",
                             str(path)], capture_output=True, text=True, check=False)

    flag = f"--config {path}"  # each hint works when pasted: it names the same file
    assert 1 == result.returncode
    assert result.stderr == (
        f"userrelay: link 'a-b' cannot start: site 'a' has no key; run userrelay keys generate "
        f"a {flag}, paste the key into the site, then run userrelay sites test a {flag}; site "
        f"'b' has no key; run userrelay keys generate b {flag}, paste the key into the site, "
        f"then run userrelay sites test b {flag}\n")


def test_a_database_made_by_the_previous_version_is_migrated_keeping_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    with sqlite3.connect(path) as conn:  # the version 1 tables this version changes
        conn.executescript("""
            CREATE TABLE site_keys (site TEXT PRIMARY KEY, sealed BLOB NOT NULL,
                                    created_at REAL NOT NULL);
            CREATE TABLE link_states (link TEXT PRIMARY KEY, paused INTEGER NOT NULL,
                                      reason TEXT, changed_at REAL NOT NULL);
            INSERT INTO site_keys VALUES ('a', x'0102', 1.0);
            INSERT INTO link_states VALUES ('a-b', 1, 'site ''b'' answered 410 Gone', 2.0);
            PRAGMA user_version = 1;""")

    conn = store.connect_sync(path)
    try:
        assert [(schema.SCHEMA_VERSION,)] == conn.execute("PRAGMA user_version").fetchall()
        assert [("a-b", 1, "site 'b' answered 410 Gone", 2.0, 0)] == conn.execute(
            "SELECT link, paused, reason, changed_at, started FROM link_states").fetchall()
        assert [("a", None, None)] == conn.execute(
            "SELECT site, previous_sealed, previous_until FROM site_keys").fetchall()
        assert [] == conn.execute("SELECT * FROM site_tests").fetchall()
    finally:
        conn.close()
