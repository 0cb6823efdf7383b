"""The record of reconciliation runs (``reconcile_runs``), and who is who across a link's sites.

Each run is stored when it starts and given its summary (or the error that stopped it) when it
ends, so status shows each link's last one. ``person_keys`` tells, for a page of one site's
users, which the relay knows on the other site too (they are joined by person, not by email).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from relay.model.reconciliation import Report


def person_keys(conn: sqlite3.Connection, site: str, other: str, ids: list[int]
                ) -> dict[int, int]:
    """For ``site``'s users among ``ids``: the person, when the relay knows them on both sites."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    persons = dict(conn.execute(f"SELECT user_id, person FROM accounts WHERE site = ? AND "
                                f"user_id IN ({marks})", (site, *ids)).fetchall())
    if not persons:
        return {}
    marks = ",".join("?" * len(persons))
    both = {int(p) for (p,) in conn.execute(
        f"SELECT person FROM accounts WHERE site = ? AND person IN ({marks})",
        (other, *persons.values()))}
    return {int(u): int(p) for u, p in persons.items() if int(p) in both}


def start_run(conn: sqlite3.Connection, link: str, now: float) -> int:
    return int(conn.execute("INSERT INTO reconcile_runs (link, started_at) VALUES (?, ?) "
                            "RETURNING id", (link, now)).fetchone()[0])


def finish_run(conn: sqlite3.Connection, report: Report) -> None:
    conn.execute("UPDATE reconcile_runs SET finished_at = ?, summary = ? WHERE id = ?",
                 (report.finished_at, json.dumps(report.summary()), report.run))


def fail_run(conn: sqlite3.Connection, run: int, error: str, now: float) -> None:
    conn.execute("UPDATE reconcile_runs SET finished_at = ?, summary = ? WHERE id = ?",
                 (now, json.dumps({"run": run, "finished_at": round(now, 3), "error": error}), run))


def last_runs(conn: sqlite3.Connection, links: list[str]) -> dict[str, dict[str, Any]]:
    """Each link's last finished reconciliation: its summary (or the error that stopped it)."""
    found = {}
    for link in links:
        row = conn.execute("SELECT summary FROM reconcile_runs WHERE link = ? AND summary IS NOT "
                           "NULL ORDER BY id DESC LIMIT 1", (link,)).fetchone()
        if row is not None:
            found[link] = json.loads(row[0])
    return found
