"""Who is within a link's role rules, and what the rules kept back (the tables ``link_scope``,
``filtered_changes`` and ``filter_counts``). Runs on the writer's thread inside the ingest
transaction (relay/db/queue.py), or on a read connection for status.

Per link, target and person the relay remembers whether the person was within the rules at
their last judged change: one who enters is sent whole, as a create; one who leaves is no longer
sent anything, and nothing is deleted on the target (docs/adr/0017-who-and-what-a-link-syncs.md).
"""

from __future__ import annotations

import sqlite3

#: The rule name counted for events no role rule could judge (no ``user.roles``: an older
#: plugin). They are let through, as before role rules existed.
UNJUDGED = "unjudged"


def was_within(conn: sqlite3.Connection, link: str, target: str, person: int) -> bool | None:
    """Whether the person was within the rules at their last judged change; None: never judged."""
    row = conn.execute("SELECT in_scope FROM link_scope WHERE link = ? AND target = ? "
                       "AND person = ?", (link, target, person)).fetchone()
    return None if row is None else bool(row[0])


def remember(conn: sqlite3.Connection, link: str, target: str, person: int, within: bool,
             now: float) -> None:
    conn.execute("INSERT INTO link_scope (link, target, person, in_scope, updated_at) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (link, target, person) DO UPDATE SET "
                  "in_scope = excluded.in_scope, updated_at = excluded.updated_at",
                  (link, target, person, int(within), now))


def filtered(conn: sqlite3.Connection, source: str, target: str, person: int, link: str,
             event_id: str, rule: str, reason: str, now: float) -> None:
    """A change a link's rule kept from ``target``: counted, and that person's last change."""
    conn.execute("INSERT INTO filtered_changes (source, target, person, link, event_id, rule, "
                 "reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, target, "
                 "person) DO UPDATE SET link = excluded.link, event_id = excluded.event_id, "
                 "rule = excluded.rule, reason = excluded.reason, at = excluded.at",
                 (source, target, person, link, event_id, rule, reason, now))
    count(conn, link, rule, now)


def count(conn: sqlite3.Connection, link: str, rule: str, now: float) -> None:
    conn.execute("INSERT INTO filter_counts (link, rule, count, last_at) VALUES (?, ?, 1, ?) "
                 "ON CONFLICT (link, rule) DO UPDATE SET count = count + 1, "
                 "last_at = excluded.last_at", (link, rule, now))


def queued(conn: sqlite3.Connection, source: str, target: str, person: int) -> None:
    """A later change of the person is queued for ``target``: it is their last change now."""
    conn.execute("DELETE FROM filtered_changes WHERE source = ? AND target = ? AND person = ?",
                 (source, target, person))


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per link, how many changes each of its rules filtered (and ``unjudged`` let through)."""
    result: dict[str, dict[str, int]] = {}
    for link, rule, n in conn.execute("SELECT link, rule, count FROM filter_counts "
                                      "ORDER BY link, rule"):
        result.setdefault(str(link), {})[str(rule)] = int(n)
    return result
