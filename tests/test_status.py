"""Status: what is queued, dead-lettered and paused, and why, per site and link."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from relay import config as config_module
from relay.constants import DEAD, DONE
from relay.db import queue, status
from relay.db.queue import Outcome
from relay.db.store import connect_sync
from relay.model.events import parse_batch
from relay.model.routing import Router
from tests.relay_settings import settings, site
from tests.support import event, generate_keys, until


async def test_status_shows_a_paused_link_with_its_reason_and_what_waits(two_sites: Any) -> None:
    def gone(document: dict[str, Any]) -> web.Response:
        return web.json_response({}, status=410)
    relay, b = await two_sites(gone)
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])
    await relay.post("a", [event("e3", 1, ["edit"], first_name="X")])
    await until(lambda: relay.db("SELECT paused FROM link_states") == [(1,)])

    conn = connect_sync(relay.config.database_path)
    current = status.snapshot(conn, relay.config)
    conn.close()

    assert {"waiting": 1, "ready": 2, "leased": 0} == current["sites"]["b"]["pending"]
    link = current["links"]["a-b"]
    assert "paused" == link["state"]
    assert link["reason"].startswith("site 'b' answered 410 Gone")


def test_the_status_command_prints_it_without_any_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": "relay.sqlite3",
        "sites": [{"id": "a", "url": "https://a.example.test"},
                  {"id": "b", "url": "https://b.example.test"}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]}))
    keys = generate_keys(config_module.load(path))

    result = subprocess.run([sys.executable, "-m", "relay", "status", "--config", str(path)],
                            capture_output=True, text=True, check=False)

    assert 0 == result.returncode, result.stderr
    assert "a-b (a -> b, push): active" in result.stdout
    assert "dead letters 0" in result.stdout
    assert keys["a"].secret not in result.stdout


def test_no_statement_of_a_status_snapshot_scans_a_table(tmp_path: Path) -> None:
    """A snapshot reads indexes only, so it stays cheap with a million deliveries kept.

    (The one scan allowed is of the partial index of leased deliveries: at most the batches in
    flight.)"""
    config = settings(tmp_path, [site("a", "http://127.0.0.1:1"), site("b", "http://127.0.0.1:2")],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}])
    conn = connect_sync(config.database_path)
    routes = Router(config).routes_from("a")
    now = time.time()
    for n in range(1, 4):
        body = json.dumps({"events": [event(f"e{n}", n, ["create"])]}).encode()
        queue.accept(conn, "a", f"msg-{n}", parse_batch(body), routes, now)
    claimed = queue.claim(conn, "b", ["a-b"], 2, now, 60)
    queue.settle(conn, [Outcome(claimed[0], DONE, 200), Outcome(claimed[1], DEAD, 422, "no")],
                 now)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)

    status.snapshot(conn, config)

    conn.set_trace_callback(None)
    scans = {}
    for sql in statements:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        if any(step.startswith(("SCAN deliveries", "SCAN seen_events"))
               and step != "SCAN deliveries USING INDEX deliveries_leased" for step in plan):
            scans[sql] = plan
    assert {} == scans
    assert len(statements) > 10
