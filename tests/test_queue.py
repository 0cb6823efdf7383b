"""The queue's statements: every one on the ingest and delivery paths uses an index fully.

A scan costs nothing on a small test database and everything with a million deliveries
pending or a million accounts, so this is checked on the statements themselves (their query
plans): no table is scanned, and no lookup settles for a prefix of an index that leaves a whole
site's rows to walk through.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from relay.constants import DONE, READY
from relay.db import queue
from relay.db.queue import Outcome
from relay.db.store import connect_sync
from relay.model.events import parse_batch
from relay.model.routing import Router
from tests.relay_settings import settings, site
from tests.support import event


def test_no_statement_of_ingest_claim_or_settle_scans_a_table(tmp_path: Path) -> None:
    config = settings(tmp_path, [site("a", "http://127.0.0.1:1"), site("b", "http://127.0.0.1:2")],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "bidirectional",
                        "outgoing": ["create", "edit", "delete", "roles"],
                        "incoming": ["create", "edit"]}])
    routes = Router(config).routes_from("a")
    back = Router(config).routes_from("b")
    conn = connect_sync(config.database_path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    now = time.time()

    def accept(*events: dict[str, object]) -> None:
        body = json.dumps({"events": list(events)}).encode()
        queue.accept(conn, "a", f"msg-{len(statements)}", parse_batch(body), routes, now)

    accept(event("e1", 1, ["create"]), event("e2", 2, ["create"]))
    accept(event("e3", 1, ["edit"], first_name="A"))
    accept(event("e4", 1, ["edit"], first_name="B"))
    claimed = queue.claim(conn, "b", ["a-b"], 10, now, 60)
    queue.settle(conn, [Outcome(claimed[0], READY, 503, "busy", now + 5),
                        Outcome(claimed[1], DONE, 200, user_id=7)], now)
    accept(event("e5", 1, ["delete"]))
    first_contact = parse_batch(json.dumps({"events": [event("b1", 50, ["create"],
                                                             email="user2@example.test")]}).encode())
    queue.accept(conn, "b", "msg-b", first_contact, back, now)  # matched by email on a
    queue.next_due(conn, "b", ["a-b"])
    queue.reclaim_expired(conn, now)
    queue.prune(conn, now, now)
    conn.set_trace_callback(None)

    scans = {}
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
            continue
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        if any(step.startswith("SCAN ") or step.endswith("USING PRIMARY KEY (site=?)")
               for step in plan):
            scans[sql] = plan
    assert {} == scans
    assert any("WHERE site = 'a' AND email = " in sql for sql in statements)
    assert len(statements) > 20
