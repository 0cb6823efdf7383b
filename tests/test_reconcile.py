"""Reconciliation against two stand-in plugins answering the digests and snapshots routes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.cli import reconcile as cli_reconcile
from relay.config import Config
from relay.db import status
from relay.db.links import LinkBook
from relay.db.store import connect_sync, in_transaction
from relay.errors import BadSignature, ReconcileFailed
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.model.reconciliation import Report
from relay.work import reconcile
from tests.partner import as_plugin
from tests.relay_settings import settings, site
from tests.support import generate_keys, mark_tested, until

ALL = ["create", "edit", "delete", "password", "roles", "metadata"]
PROFILE = ("first_name", "last_name", "nickname", "display_name", "url", "description", "locale")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class StandIn:
    """A site's plugin as far as reconciliation sees it: users, digests, snapshots."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.users: dict[int, dict[str, Any]] = {}
        self.key: SiteKey | None = None
        self.pages: list[tuple[int, int]] = []   # (after, limit) of each digests request
        self.url = ""

    def add(self, user_id: int, email: str, modified: float = 1000.0, **fields: Any) -> None:
        user = {"id": user_id, "login": email.split("@")[0], "email": email,
                **dict.fromkeys(PROFILE, ""), "registered": "2026-01-01 00:00:00",
                "roles": ["subscriber"], "password_hash": "$P$Bsame", "meta": {},
                "modified": modified}
        user.update(fields)
        self.users[user_id] = user

    def digests_of(self, user: dict[str, Any], groups: list[str]) -> dict[str, str]:
        values = {"profile": {"email": user["email"], **{k: user[k] for k in PROFILE}},
                  "roles": sorted(user["roles"]), "password": user["password_hash"],
                  "meta": user["meta"]}
        return {g: hashlib.sha256(canonical(values[g]).encode()).hexdigest() for g in groups}

    def check(self, request: web.Request, body: bytes, operation: str) -> dict[str, Any]:
        assert self.key is not None
        try:
            return as_plugin(self.key, request.headers, body, operation)
        except BadSignature as exc:
            raise web.HTTPUnauthorized(text=json.dumps({"error": str(exc)})) from None

    async def digests(self, request: web.Request) -> web.Response:
        document = self.check(request, await request.read(), "digests")
        after, limit = int(document["after"]), int(document["limit"])
        groups = [g for g in document["fields"].split(",") if g]
        self.pages.append((after, limit))
        ids = sorted(i for i in self.users if i > after)[:limit]
        users = [{"id": i, "email": self.users[i]["email"], "login": self.users[i]["login"],
                  "modified": self.users[i]["modified"],
                  "digests": self.digests_of(self.users[i], groups)} for i in ids]
        return web.json_response({"users": users,
                                  "next": ids[-1] if len(ids) == limit else None})

    async def snapshots(self, request: web.Request) -> web.Response:
        ids = self.check(request, await request.read(), "snapshots")["ids"]
        return web.json_response({"users": [self.users[i] for i in ids if i in self.users]})


@pytest.fixture
async def stand_in(aiohttp_server: Any) -> Callable[[str], Awaitable[StandIn]]:
    async def make(name: str) -> StandIn:
        plugin = StandIn(name)
        app = web.Application()
        app.router.add_post("/wp-json/userrelay/v1/digests", plugin.digests)
        app.router.add_post("/wp-json/userrelay/v1/snapshots", plugin.snapshots)
        server = await aiohttp_server(app)
        plugin.url = str(server.make_url("")).rstrip("/")
        return plugin
    return make


class World:
    def __init__(self, config: Config, a: StandIn, b: StandIn) -> None:
        self.config, self.a, self.b = config, a, b
        self.conn = connect_sync(config.database_path)

    async def drift(self, repair: bool = False, page_size: int = 500) -> Report:
        keys = KeyStore(self.config.database_path, self.config.master_key_path)

        async def read(fn: Any, *args: Any) -> Any:
            return fn(self.conn, *args)

        async def write(fn: Any, *args: Any) -> Any:
            return in_transaction(self.conn, fn, *args)
        try:
            return await reconcile.reconcile(self.config, "a-b", keys, read, write,
                                             repair=repair, page_size=page_size)
        finally:
            keys.close()

    def deliveries(self) -> list[tuple[Any, ...]]:
        return self.conn.execute("SELECT source, event_id, target, kind, actions, payload "
                                 "FROM deliveries ORDER BY id").fetchall()


@pytest.fixture
async def world(stand_in: Any, tmp_path: Path) -> Callable[..., Awaitable[World]]:
    async def make(direction: str = "push", outgoing: list[str] | None = None,
                   incoming: list[str] | None = None) -> World:
        a, b = await stand_in("a"), await stand_in("b")
        config = settings(tmp_path, [site("a", a.url), site("b", b.url)],
                          [{"id": "a-b", "site": "a", "remote": "b", "direction": direction,
                            "outgoing": outgoing or ALL, "incoming": incoming or ALL}])
        keys = generate_keys(config)
        a.key, b.key = keys["a"], keys["b"]
        return World(config, a, b)
    return make


def kinds(report: Report) -> dict[str, tuple[str, list[str], str | None]]:
    return {e.match: (e.kind, e.groups, e.source) for e in report.entries}


async def test_identical_sites_are_in_step(world: Any) -> None:
    w = await world()
    for i in range(1, 6):
        w.a.add(i, f"u{i}@example.test")
        w.b.add(i + 100, f"u{i}@example.test")
    report = await w.drift()
    assert (5, []) == (report.in_step, report.entries)


async def test_users_without_an_email_are_paired_by_login(world: Any) -> None:
    w = await world()
    w.a.add(1, "both@example.test")
    w.b.add(7, "both@example.test")
    w.a.add(2, "only-a@example.test")
    for user in (w.a.users[1], w.b.users[7], w.a.users[2]):
        user["email"] = ""  # logins stay: "both" and "only-a"

    report = await w.drift()

    assert (1, {"login:only-a": ("missing", [], "a")}) == (report.in_step, kinds(report))


async def test_a_user_missing_on_the_target_is_reported_with_its_source(world: Any) -> None:
    w = await world()
    w.a.add(1, "both@example.test")
    w.b.add(7, "both@example.test")
    w.a.add(2, "only-a@example.test")
    w.b.add(8, "only-b@example.test")
    report = await w.drift()
    entries = {e.match: e for e in report.entries}
    assert ("missing", "a", "b") == (entries["only-a@example.test"].kind,
                                     entries["only-a@example.test"].source,
                                     entries["only-a@example.test"].target)
    assert ["create", "roles", "password", "metadata"] == entries["only-a@example.test"].repair
    # Only on the receiving side of a push link: reported, never deleted.
    assert (None, []) == (entries["only-b@example.test"].source,
                          entries["only-b@example.test"].repair)
    assert 1 == report.in_step


async def test_the_report_names_the_field_groups_that_differ(world: Any) -> None:
    w = await world()
    w.a.add(1, "ada@example.test", first_name="Ada", roles=["editor"])
    w.b.add(1, "ada@example.test", first_name="Ada", roles=["subscriber"])
    w.a.add(2, "bob@example.test", first_name="Bob", password_hash="$P$new")
    w.b.add(2, "bob@example.test", first_name="Robert", password_hash="$P$old")
    report = await w.drift()
    assert {"ada@example.test": ("differs", ["roles"], "a"),
            "bob@example.test": ("differs", ["profile", "password"], "a")} == kinds(report)


async def test_a_pull_link_takes_the_remote_as_the_source(world: Any) -> None:
    w = await world("pull")
    w.a.add(1, "ada@example.test", first_name="Old")
    w.b.add(1, "ada@example.test", first_name="New")
    report = await w.drift()
    assert {"ada@example.test": ("differs", ["profile"], "b")} == kinds(report)


async def test_a_conflict_on_a_bidirectional_link_goes_to_the_latest_change(world: Any) -> None:
    w = await world("bidirectional")
    w.a.add(1, "ada@example.test", first_name="From A", modified=2000.0)
    w.b.add(1, "ada@example.test", first_name="From B", modified=1000.0)
    w.a.add(2, "bob@example.test", first_name="From A", modified=1000.0)
    w.b.add(2, "bob@example.test", first_name="From B", modified=3000.0)
    report = await w.drift()
    assert {"ada@example.test": ("conflict", ["profile"], "a"),
            "bob@example.test": ("conflict", ["profile"], "b")} == kinds(report)
    bob = next(e for e in report.entries if e.match == "bob@example.test")
    assert "most recent change wins: b changed" in bob.decided
    assert {"a": 1000.0, "b": 3000.0} == bob.modified


async def test_repair_enqueues_exactly_the_fixes_through_ingest(world: Any) -> None:
    w = await world()
    w.a.add(1, "same@example.test")
    w.b.add(1, "same@example.test")
    w.a.add(2, "roles@example.test", roles=["editor"])
    w.b.add(2, "roles@example.test", roles=["subscriber"])
    w.a.add(3, "new@example.test", first_name="New")
    w.b.add(9, "extra@example.test")
    report = await w.drift(repair=True)
    assert 2 == report.enqueued
    rows = {r[1]: r for r in w.deliveries()}
    run = report.run
    assert {f"repair-a-b-{run}-2", f"repair-a-b-{run}-3"} == set(rows)
    roles = rows[f"repair-a-b-{run}-2"]
    assert ("a", "b", "update", "roles") == (roles[0], roles[2], roles[3], roles[4])
    assert ["editor"] == json.loads(roles[5])["user"]["roles"]
    created = json.loads(rows[f"repair-a-b-{run}-3"][5])
    assert (["create", "password", "roles", "metadata"], "New", True) == (
        created["actions"], created["user"]["first_name"], created["create_missing"])
    assert "modified" not in created["user"]


async def test_repair_obeys_the_links_actions(world: Any) -> None:
    w = await world(outgoing=["edit"])
    w.a.add(1, "roles@example.test", roles=["editor"], first_name="A")
    w.b.add(1, "roles@example.test", roles=["subscriber"], first_name="B")
    w.a.add(2, "new@example.test")
    report = await w.drift(repair=True)
    entries = {e.match: e for e in report.entries}
    # The link carries only edits: roles are not compared, a missing user is not created.
    assert (["profile"], ["edit"]) == (entries["roles@example.test"].groups,
                                       entries["roles@example.test"].repair)
    assert [] == entries["new@example.test"].repair
    assert [("update", "edit")] == [(r[3], r[4]) for r in w.deliveries()]


async def test_sites_are_read_a_page_at_a_time(world: Any) -> None:
    w = await world()
    for i in range(1, 24):
        w.a.add(i, f"u{i}@example.test")
        w.b.add(i + 500, f"u{i}@example.test")
    w.a.users[17]["first_name"] = "changed"
    report = await w.drift(page_size=5)
    assert (22, ["u17@example.test"]) == (report.in_step, [e.match for e in report.entries])
    assert [(0, 5), (5, 5), (10, 5), (15, 5), (20, 5)] == w.a.pages
    assert all(limit == 5 for _, limit in w.b.pages)


async def test_a_person_the_relay_knows_is_matched_by_identity_not_email(world: Any) -> None:
    w = await world()
    in_transaction(w.conn, lambda c: (
        c.execute("INSERT INTO persons (id, created_at) VALUES (1, 0)"),
        c.execute("INSERT INTO accounts VALUES ('a', 1, 1, 'new@example.test', 'ada')"),
        c.execute("INSERT INTO accounts VALUES ('b', 4, 1, 'old@example.test', 'ada')")))
    w.a.add(1, "new@example.test")
    w.b.add(4, "old@example.test")
    report = await w.drift()
    assert [("differs", ["profile"], {"a": 1, "b": 4})] == [
        (e.kind, e.groups, e.users) for e in report.entries]


async def test_the_last_run_is_shown_in_the_status(world: Any) -> None:
    w = await world()
    w.a.add(1, "only-a@example.test")
    await w.drift()
    current = status.snapshot(w.conn, w.config)
    last = current["links"]["a-b"]["last_reconcile"]
    assert (1, 0, None) == (last["missing"], last["in_step"], last["enqueued"])
    assert "last reconciliation:" in status.render(current)


async def test_a_site_that_refuses_fails_the_run_and_says_why(world: Any) -> None:
    w = await world()
    w.b.check = _refuse  # as a site with another key does
    with pytest.raises(ReconcileFailed, match="site 'b' answered digests with 401"):
        await w.drift()
    last = status.snapshot(w.conn, w.config)["links"]["a-b"]["last_reconcile"]
    assert "401" in last["error"]


def _refuse(request: web.Request, body: bytes, operation: str) -> None:
    raise web.HTTPUnauthorized(text='{"error": "refused"}')


def test_the_schedule_is_declared_per_link(tmp_path: Path) -> None:
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", "http://127.0.0.1:9")],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                        "reconcile": {"every": "6h", "repair": True}}])
    assert (21600.0, True) == (config.links["a-b"].reconcile_every,
                               config.links["a-b"].reconcile_repair)


def test_a_bad_schedule_names_the_key(tmp_path: Path) -> None:
    from relay.errors import ConfigError
    with pytest.raises(ConfigError, match=r"links\[0\] \(a-b\)\.reconcile\.every"):
        settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", "http://127.0.0.1:9")],
                 [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                   "reconcile": {"every": "soon"}}])


async def test_the_daemon_reconciles_on_schedule_only_once_the_link_is_active(
        stand_in: Any, relay_factory: Any, tmp_path: Path) -> None:
    a, b = await stand_in("a"), await stand_in("b")
    config = settings(tmp_path, [site("a", a.url), site("b", b.url)],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                        "reconcile": {"every": "1m", "repair": True}}])
    # A minute is the shortest a configuration allows; a test cannot wait that long.
    config.links["a-b"] = replace(config.links["a-b"], reconcile_every=0.05)
    relay = await relay_factory(config, start_links=False)
    a.key, b.key = relay.keys["a"], relay.keys["b"]
    a.add(1, "only-a@example.test")
    await asyncio.sleep(0.3)  # several periods: nothing may run while the link is a draft
    assert ([], []) == (a.pages, relay.db("SELECT id FROM reconcile_runs"))

    store = KeyStore(config.database_path, config.master_key_path)
    try:
        for site_id in ("a", "b"):
            mark_tested(config, store, site_id)
    finally:
        store.close()
    with LinkBook(config) as book:
        book.start("a-b")
    finished = "SELECT summary FROM reconcile_runs WHERE summary IS NOT NULL ORDER BY id LIMIT 1"
    # The repair is queued, then the run's summary written: wait for both.
    await until(lambda: relay.db("SELECT count(*) FROM deliveries") == [(1,)]
                and bool(relay.db(finished)), timeout=60)
    summary = json.loads(relay.db(finished)[0][0])
    assert (1, 1) == (summary["missing"], summary["enqueued"])


async def test_the_text_report_names_each_difference_and_its_fix(world: Any) -> None:
    w = await world("bidirectional")
    w.a.add(1, "ada@example.test", first_name="A", modified=2000.0)
    w.b.add(1, "ada@example.test", first_name="B", modified=1000.0)
    w.b.add(2, "bob@example.test")
    text = cli_reconcile.render(await w.drift())
    assert "in step: 0; missing: 1; differ: 0; conflicts: 1" in text
    assert ("CONFLICT ada@example.test (a #1, b #1): differs in profile; most recent change "
            "wins: a changed at 1970-01-01 00:33:20 UTC") in text
    assert "repair: edit from a to b" in text
    assert "MISSING  bob@example.test (b #2, not on a): missing; only on b; repair: create" in text
    assert "Run with --repair to queue 2 fixes." in text
