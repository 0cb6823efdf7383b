"""Dead letters: listed with what an admin needs, replayed in their person's order, purged.

The functions run on a real database as the daemon and the CLI run them; the ``userrelay dead``
command is run as a child process, with and without a relay running.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.constants import DEAD, DONE
from relay.db import deadletters, queue
from relay.db.deadletters import Filter
from relay.db.queue import Outcome
from relay.db.store import connect_sync
from relay.errors import InvalidRequest, UnknownSite
from relay.model.events import parse_batch
from relay.model.routing import Router
from tests.relay_settings import config_file, settings, site
from tests.support import event, run_cli, until

ALL = ["create", "edit", "delete", "password", "roles", "metadata"]


class Queue:
    """Site a pushes to b and c; events go in and deliveries come out as the daemon does it."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = settings(tmp_path, [site("a", "http://127.0.0.1:1"),
                                          site("b", "http://127.0.0.1:2"),
                                          site("c", "http://127.0.0.1:3")],
                               [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                                 "outgoing": ALL},
                                {"id": "a-c", "site": "a", "remote": "c", "direction": "push",
                                 "outgoing": ALL}])
        self.conn = connect_sync(self.config.database_path)
        self.routes = Router(self.config).routes_from("a")
        self.requests = 0

    def accept(self, *events: dict[str, Any], now: float | None = None) -> None:
        self.requests += 1
        body = json.dumps({"events": list(events)}).encode()
        queue.accept(self.conn, "a", f"msg-{self.requests}", parse_batch(body), self.routes,
                     time.time() if now is None else now)

    def send(self, target: str, outcome: str, now: float | None = None,
             error: str = "role 'wizard' does not exist here") -> list[int]:
        """Claim what is due for ``target`` and settle it all as ``outcome`` (done or dead)."""
        now = time.time() if now is None else now
        claimed = queue.claim(self.conn, target, [f"a-{target}"], 100, now, 60)
        queue.settle(self.conn, [Outcome(d, outcome, 422 if outcome == DEAD else 200,
                                         error if outcome == DEAD else None) for d in claimed],
                     now)
        return [d.id for d in claimed]

    def claim(self, target: str) -> list[str]:
        return [d.payload["origin"]["event_id"] for d in
                queue.claim(self.conn, target, [f"a-{target}"], 100, time.time(), 60)]

    def states(self) -> list[tuple[str, str, str, int]]:
        return self.conn.execute("SELECT event_id, target, state, attempts FROM deliveries "
                                 "ORDER BY id").fetchall()

    def transaction(self, fn: Any, *args: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        result = fn(self.conn, *args)
        self.conn.execute("COMMIT")
        return result


@pytest.fixture
def q(tmp_path: Path) -> Any:
    q = Queue(tmp_path)
    yield q
    q.conn.close()


def test_a_dead_letter_is_listed_with_what_an_admin_needs(q: Queue) -> None:
    q.accept(event("e1", 7, ["create", "password"], password_hash="$P$Bsecrethashsecrethash12"))
    q.send("b", DEAD, error="cannot take $P$Bsecrethashsecrethash12")

    (letter,) = deadletters.list_dead(q.conn, Filter())

    assert {"source": "a", "target": "b", "link": "a-b", "event_id": "e1", "login": "user7",
            "email": "user7@example.test", "actions": ["create", "password"], "attempts": 1,
            "last_status": 422, "last_error": "cannot take **********"} == {
        k: letter[k] for k in ("source", "target", "link", "event_id", "login", "email",
                               "actions", "attempts", "last_status", "last_error")}
    assert letter["dead_at"] >= letter["queued_at"] > 0
    assert isinstance(letter["delivery"], int) and isinstance(letter["person"], int)
    assert "password_hash" not in json.dumps(letter)


def test_the_listing_filters_by_source_target_time_window_and_ids(q: Queue) -> None:
    long_ago = time.time() - 7200
    q.accept(event("old", 1, ["create"]), now=long_ago)
    q.send("b", DEAD, now=long_ago)
    q.send("c", DEAD, now=long_ago)
    q.accept(event("new", 2, ["create"]))
    (new_to_b,) = q.send("b", DEAD)
    q.send("c", DONE)

    def listed(**criteria: Any) -> list[tuple[str, str]]:
        flt = deadletters.parse_filter(criteria, q.config)
        return [(d["event_id"], d["target"]) for d in deadletters.list_dead(q.conn, flt)]

    assert [("new", "b"), ("old", "c"), ("old", "b")] == listed()
    assert [("new", "b"), ("old", "b")] == listed(target="b")
    assert [("old", "c")] == listed(target="c", source="a")
    assert [("new", "b")] == listed(since="1h")
    assert [("old", "c"), ("old", "b")] == listed(until="1h")
    assert [("new", "b")] == listed(ids=[new_to_b])
    assert [("new", "b")] == [(d["event_id"], d["target"]) for d in
                              deadletters.list_dead(q.conn, Filter(), limit=1)]
    assert 3 == deadletters.count(q.conn, Filter())


def test_a_replayed_dead_letter_goes_out_before_the_persons_newer_pending_changes(
        q: Queue) -> None:
    q.accept(event("e1", 1, ["create"]))
    q.send("b", DEAD)
    q.accept(event("e2", 1, ["edit"], first_name="Later"))  # the head of the line now

    replayed = q.transaction(deadletters.replay, Filter(target="b"), time.time())

    assert ["b"] == list(replayed)
    assert ["e1"] == q.claim("b")  # the oldest change first; the newer one waits behind it
    assert [("e1", "b", "leased", 1), ("e2", "b", "waiting", 0)] == [
        s for s in q.states() if s[1] == "b"]


def test_a_replayed_dead_letter_waits_while_the_persons_newer_change_is_in_flight(
        q: Queue) -> None:
    q.accept(event("e1", 1, ["create"]))
    q.send("b", DEAD)
    q.accept(event("e2", 1, ["edit"], first_name="Later"))
    in_flight = queue.claim(q.conn, "b", ["a-b"], 10, time.time(), 60)

    q.transaction(deadletters.replay, Filter(target="b"), time.time())

    assert [] == q.claim("b")  # one delivery of a person's line at a time
    queue.settle(q.conn, [Outcome(in_flight[0], DONE, 200)], time.time())
    assert ["e1"] == q.claim("b")


def test_replay_starts_the_attempts_again_and_forgets_the_old_error(q: Queue) -> None:
    q.accept(event("e1", 1, ["create"]))
    q.send("b", DEAD)

    q.transaction(deadletters.replay, Filter(ids=(1,)), time.time())

    assert [("ready", 0, None, None)] == q.conn.execute(
        "SELECT state, attempts, last_status, last_error FROM deliveries WHERE id = 1").fetchall()
    assert [] == deadletters.list_dead(q.conn, Filter())


def test_a_large_replay_is_cut_into_short_transactions(q: Queue,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletters, "REPLAY_BATCH", 2)
    q.accept(*(event(f"e{n}", n, ["create"]) for n in range(1, 6)))
    dead = q.send("b", DEAD)

    batches = deadletters.in_batches(q.conn, Filter(target="b"))
    for batch in batches:
        q.transaction(deadletters.replay, batch, time.time())

    assert [2, 2, 1] == [len(b.ids) for b in batches]
    assert sorted(dead) == sorted(i for b in batches for i in b.ids)
    assert [] == deadletters.list_dead(q.conn, Filter())


def test_purge_deletes_only_the_dead_letters_it_names(q: Queue) -> None:
    q.accept(event("e1", 1, ["create"]), event("e2", 2, ["create"]))
    q.send("b", DEAD)
    q.send("c", DEAD)
    q.accept(event("e3", 3, ["create"]))  # pending to b and c

    purged = q.transaction(deadletters.purge, Filter(target="b"))

    assert 2 == purged
    assert [("e1", "c", "dead", 1), ("e2", "c", "dead", 1), ("e3", "b", "ready", 0),
            ("e3", "c", "ready", 0)] == q.states()


def test_replaying_or_purging_everything_must_be_asked_for_by_name(q: Queue) -> None:
    nothing_named = deadletters.parse_filter({}, q.config)
    everything = deadletters.parse_filter({"all": True}, q.config)

    with pytest.raises(InvalidRequest, match="name the dead letters to purge"):
        deadletters.require_choice(nothing_named, "purge")
    deadletters.require_choice(everything, "purge")


@pytest.mark.parametrize(("given", "expected"), [
    (1764250000, 1764250000.0),
    ("1764250000.5", 1764250000.5),
    ("2025-11-27T13:46:40Z", 1764251200.0),
    ("2025-11-27T13:46:40", 1764251200.0),
    ("2025-11-27T14:46:40+01:00", 1764251200.0),
    ("2h", 1000000.0 - 7200),
    ("30m", 1000000.0 - 1800),
])
def test_a_time_is_unix_seconds_an_iso_8601_time_or_a_duration_ago(given: Any,
                                                                   expected: float) -> None:
    assert expected == deadletters.parse_when(given, "since", now=1000000.0)


def test_a_bad_filter_is_refused_naming_the_field(q: Queue) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"since": "yesterday"}, InvalidRequest, "since: got 'yesterday'"),
             ({"ids": ["x"]}, InvalidRequest, "ids: got"),
             ({"target": "nowhere"}, UnknownSite, "target: no site 'nowhere'"),
             ({"colour": "red"}, InvalidRequest, "colour: unknown")]
    for document, error, message in cases:
        with pytest.raises(error, match=message):
            deadletters.parse_filter(document, q.config)


def test_the_dead_command_lists_replays_and_purges_without_a_relay_running(
        q: Queue, tmp_path: Path) -> None:
    q.accept(event("e1", 1, ["create"]), event("e2", 2, ["create"]))
    q.send("b", DEAD)
    q.send("c", DEAD)
    path = str(config_file(q.config, tmp_path / "relay.yaml"))

    listed = json.loads(run_cli("dead", "list", "--json", "--target", "b",
                                "--config", path).stdout)
    text = run_cli("dead", "list", "--config", path).stdout
    replayed = run_cli("dead", "replay", "--target", "b", "--since", "1h", "--config", path)
    refused = run_cli("dead", "purge", "--config", path, check=False)
    purged = run_cli("dead", "purge", "--all", "--config", path)

    assert (2, ["e2", "e1"]) == (listed["count"], [d["event_id"] for d in listed["dead_letters"]])
    assert "a -> b (a-b)  event e1" in text and "4 dead letter(s)." in text
    assert "role 'wizard' does not exist here" in text
    assert "Replayed 2 dead letter(s) (2 to b)" in replayed.stdout
    assert (1, "") == (refused.returncode, refused.stdout)
    assert "name the dead letters to purge" in refused.stderr
    assert "Purged 2 dead letter(s)." in purged.stdout
    assert [("e1", "b", "ready", 0), ("e2", "b", "ready", 0)] == q.states()


def test_the_dead_command_names_an_unknown_site(q: Queue, tmp_path: Path) -> None:
    result = run_cli("dead", "replay", "--target", "shpo", "--config",
                     str(config_file(q.config, tmp_path / "relay.yaml")), check=False)

    assert 1 == result.returncode
    assert "target: no site 'shpo' is configured; configured sites: a, b, c" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_dead_letter_replayed_from_the_command_line_reaches_a_running_relays_partner(
        two_sites: Any, tmp_path: Path) -> None:
    def respond(document: dict[str, Any]) -> web.Response:
        if len(b.requests) == 1:
            return web.json_response({"error": "not now"}, status=422)
        return web.json_response({"results": [b.applied(e) for e in document["events"]]})
    relay, b = await two_sites(respond)
    await relay.post("a", [event("e1", 1, ["create"])])
    await until(lambda: relay.db("SELECT state FROM deliveries") == [("dead",)])
    path = config_file(relay.config, tmp_path / "relay.yaml")

    run_cli("dead", "replay", "--all", "--config", str(path))

    await b.wait_for(lambda: len(b.requests) == 2)
    await until(lambda: relay.db("SELECT state, attempts FROM deliveries") == [("done", 1)])
    assert "e1" == b.requests[1]["events"][0]["origin"]["event_id"]


def test_purging_never_touches_a_pending_delivery(q: Queue) -> None:
    q.accept(event("e1", 1, ["create"]))

    purged = q.transaction(deadletters.purge, Filter(everything=True))

    assert 0 == purged
    with sqlite3.connect(q.config.database_path) as conn:
        assert 2 == conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]


def test_a_dead_letter_stored_with_a_payload_sqlite_cannot_read_still_lists(
        q: Any, tmp_path: Path) -> None:
    # Before ingest refused non-finite numbers, an event with NaN could be stored as it came.
    q.accept(event("e1", 1, ["create"]), event("e2", 2, ["create"]))
    q.send("b", DEAD)
    q.conn.execute("UPDATE deliveries SET payload = replace(payload, '\"occurred_at\":', "
                   "'\"occurred_at\":NaN,\"was\":') WHERE event_id = 'e1' AND target = 'b'")

    letters = deadletters.list_dead(q.conn, Filter(target="b"))
    listed = json.loads(run_cli("dead", "list", "--json", "--target", "b", "--config",
                                str(config_file(q.config, tmp_path / "relay.yaml"))).stdout)

    assert [("e2", "user2"), ("e1", "user1")] == [(d["event_id"], d["login"]) for d in letters]
    assert ["e2", "e1"] == [d["event_id"] for d in listed["dead_letters"]]


@pytest.mark.parametrize("query", [
    {"ids": "²"}, {"limit": "²"}, {"ids": str(2**63)}, {"ids": "9" * 5000},
    {"limit": str(2**64)}, {"since": "9" * 400}, {"since": "1e400h"}, {"until": "\udcff"},
    {"ids": ",".join(str(i) for i in range(1, 10_002))},
])
def test_a_filter_no_database_could_take_is_refused_naming_the_field(
        q: Any, query: dict[str, str]) -> None:
    def parse() -> None:
        deadletters.parse_filter(query, q.config, allow=frozenset({"limit"}))
        deadletters.parse_limit(query.get("limit"))
    with pytest.raises(InvalidRequest) as refused:
        parse()

    assert refused.value.message.startswith(f"{next(iter(query))}: got")
