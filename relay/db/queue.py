"""The durable delivery queue: each person's line to each target, kept in order.

A delivery is one event for one target. Per (target, person) the pending deliveries form a
line: only its head is ``ready`` (due at ``run_at``) or ``leased`` (being sent); the rest are
``waiting``. So a later change waits while an earlier one is retried, and other people's
changes are not held up. Claiming takes due heads with a lease (never deletes); settling an
outcome moves the line on. Every function here runs on the writer's thread inside a
transaction (see ``store``), and takes the connection first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from relay.constants import DEAD, DONE, LEASED, READY, SUPERSEDED, WAITING
from relay.db import identity, scope
from relay.model.events import Event
from relay.model.for_target import for_target, merge_updates, versions_for
from relay.model.routing import Route

#: A person's pending deliveries to a target. Spelt exactly as the partial index
#: ``deliveries_line`` is, or SQLite will not use it (and scans the whole table).
IN_LINE = f"state IN ('{WAITING}', '{READY}', '{LEASED}')"


@dataclass(frozen=True)
class Claimed:
    id: int
    source: str
    event_id: str
    target: str
    link: str
    person: int
    attempts: int
    created_at: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed delivery; ``state`` is done, ready (retry) or dead."""

    delivery: Claimed
    state: str
    status: int | None = None
    error: str | None = None
    run_at: float | None = None
    user_id: int | None = None


# --- ingest -------------------------------------------------------------------------------------

def accept(conn: sqlite3.Connection, site: str, webhook_id: str, events: list[Event],
           routes: list[Route], now: float) -> tuple[int, dict[str, Any]]:
    """Store one request's events and their deliveries; the answer is kept for repeats."""
    receipt = conn.execute("SELECT status, answer FROM receipts WHERE site = ? AND webhook_id = ?",
                           (site, webhook_id)).fetchone()
    if receipt is not None:
        return int(receipt[0]), json.loads(receipt[1])
    counts = {"accepted": 0, "duplicates": 0, "echoes": 0, "deliveries": 0, "unjudged": 0}
    filtered: list[dict[str, str]] = []
    match_by = [(r.target, r.match_by) for r in routes]
    for event in events:
        outcome = "routed"
        if event.origin is not None:
            outcome = "echo"  # a change a plugin applied from us, reported again: drop it
        inserted = conn.execute(
            "INSERT INTO seen_events (site, event_id, received_at, outcome) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING", (site, event.id, now, outcome)).rowcount
        if not inserted:
            counts["duplicates"] += 1
            continue
        if outcome == "echo":
            counts["echoes"] += 1
            continue
        counts["accepted"] += 1
        # A person new to the relay has no account elsewhere and no line yet: skip the lookups.
        person, new = identity.resolve(conn, site, event.user_id, event.user["email"],
                                       event.user["login"], match_by)
        unjudged = False
        for route in routes:
            carried = event
            if route.role_rules:
                held = event.user.get("roles")
                if held is None:  # an older plugin's event: no rule can judge it (ADR 17)
                    unjudged = True
                    scope.count(conn, route.link, scope.UNJUDGED, now)
                else:
                    verdict = _judged(conn, site, event, route, person, new, held, now)
                    if isinstance(verdict, dict):
                        filtered.append(verdict)
                        continue
                    if verdict:  # entered the rules: sent whole, as a create
                        carried = _whole_create(event)
            actions, user = for_target(carried, route.actions, route.meta_keys, route.fields,
                                       route.roles_kept if route.role_rules else None)
            if not actions:
                continue
            payload = {
                "origin": {"site": site, "event_id": event.id},
                "occurred_at": event.occurred_at,
                "actions": [a for a in ("create", "edit", "delete", "password", "roles",
                                        "metadata") if a in actions],
                "match": {"by": route.match_by if event.user["email"] else "login",
                          "user_id": None if new else
                          identity.account_on(conn, person, route.target)},
                "create_missing": "create" in route.actions,
                "user": user,
            }
            if event.backfill:  # the target keeps a copy changed after this snapshot
                payload["backfill"] = True
            if carried.whole:
                payload["whole"] = True
            if event.resend:
                payload["resend"] = True
            kept = frozenset() if "email" in route.fields else frozenset({"email"})
            if kept:  # travels to find the person; never written over the target's own
                payload["keep"] = sorted(kept)
            versions_carried = versions_for(event, actions, user, kept)
            if versions_carried is not None:  # the target applies only groups newer than its own
                payload["versions"] = versions_carried
                # ... or, live from the source of a push or pull link, any not overtaken by
                # that source's own (the initial sync keeps a copy changed after it: ADR 6)
                if route.one_way and not event.backfill:
                    payload["source_wins"] = True
            _enqueue(conn, site, carried, route, person, payload, now, new)
            if route.role_rules and not new:
                scope.queued(conn, site, route.target, person)
            counts["deliveries"] += 1
        counts["unjudged"] += int(unjudged)
        if event.kind == "delete":
            identity.forget(conn, site, person)
    answer = {"status": "accepted", **counts, "filtered": filtered}
    conn.execute("INSERT INTO receipts (site, webhook_id, status, answer, received_at) "
                 "VALUES (?, ?, ?, ?, ?)", (site, webhook_id, 202, json.dumps(answer), now))
    return 202, answer


def _judged(conn: sqlite3.Connection, site: str, event: Event, route: Route, person: int,
            new: bool, held: list[str], now: float) -> dict[str, str] | bool:
    """Judge a change by the route's role rules, remembering the verdict: what the answer says
    of it when a rule keeps it back, else whether the person just entered the rules."""
    outside = route.outside(held)
    was = None if new else scope.was_within(conn, route.link, route.target, person)
    scope.remember(conn, route.link, route.target, person, outside is None, now)
    if outside is not None:
        rule, why = outside
        scope.filtered(conn, site, route.target, person, rule.link, event.id, rule.rule, why,
                       now)
        return {"event": event.id, "target": route.target, "link": rule.link,
                "rule": rule.rule, "reason": why}
    return was is False and event.kind != "delete"


def _whole_create(event: Event) -> Event:
    """The change of a person who entered a link's role rules, as a create of everything it
    carries (a whole event carries everything; the links then cut it to what they allow).
    With edit beside it: a link that does not allow create still gets the profile."""
    actions = {"create", "edit", "roles"}
    if "password_hash" in event.user:
        actions.add("password")
    if "meta" in event.user:
        actions.add("metadata")
    return replace(event, actions=frozenset(actions), whole=True)


def _enqueue(conn: sqlite3.Connection, source: str, event: Event, route: Route, person: int,
             payload: dict[str, Any], now: float, new_person: bool) -> None:
    kind = event.kind
    line = (route.target, person)
    if new_person:
        _insert(conn, source, event.id, route, person, kind, payload, READY, now)
        return
    if kind == "delete":
        # A delete makes the person's pending updates to this target pointless.
        conn.execute(f"UPDATE deliveries SET state = '{SUPERSEDED}', updated_at = ? "
                     f"WHERE target = ? AND person = ? AND {IN_LINE} AND state != '{LEASED}' "
                     "AND kind = 'update'", (now, *line))
        _promote(conn, *line, now)
    tail = conn.execute(
        "SELECT id, state, attempts, kind, payload FROM deliveries "
        f"WHERE target = ? AND person = ? AND {IN_LINE} ORDER BY id DESC LIMIT 1",
        line).fetchone()
    if (tail is not None and kind == "update" and tail[3] == "update" and tail[2] == 0
            and tail[1] in (WAITING, READY)):
        # Never sent: fold this update into it rather than queue a second delivery.
        merged = merge_updates(json.loads(tail[4]), payload)
        conn.execute("UPDATE deliveries SET payload = ?, actions = ?, event_id = ?, updated_at = ? "
                     "WHERE id = ?", (json.dumps(merged), ",".join(merged["actions"]),
                                      event.id, now, tail[0]))
        return
    _insert(conn, source, event.id, route, person, kind, payload,
            READY if tail is None else WAITING, now)


def _insert(conn: sqlite3.Connection, source: str, event_id: str, route: Route, person: int,
            kind: str, payload: dict[str, Any], state: str, now: float) -> None:
    conn.execute(
        "INSERT INTO deliveries (source, event_id, target, link, person, kind, actions, payload, "
        "state, run_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (source, event_id, route.target, route.link, person, kind, ",".join(payload["actions"]),
         json.dumps(payload, separators=(",", ":")), state, now, now, now))


def _promote(conn: sqlite3.Connection, target: str, person: int, now: float) -> None:
    """Make the oldest pending delivery of a line its head, if it is not already.

    The head is always the oldest pending delivery: deliveries join a line at its end.
    """
    oldest = conn.execute(f"SELECT id, state FROM deliveries WHERE target = ? AND person = ? "
                          f"AND {IN_LINE} ORDER BY id LIMIT 1", (target, person)).fetchone()
    if oldest is not None and oldest[1] == WAITING:
        conn.execute(f"UPDATE deliveries SET state = '{READY}', run_at = ?, updated_at = ? "
                     "WHERE id = ?", (now, now, oldest[0]))


# --- delivery -----------------------------------------------------------------------------------

def claim(conn: sqlite3.Connection, target: str, links: Iterable[str], limit: int, now: float,
          lease: float) -> list[Claimed]:
    """Lease up to ``limit`` due heads for ``target`` on the given unpaused links, oldest first."""
    rows: list[Any] = []
    for link in links:
        if len(rows) >= limit:
            break
        rows += conn.execute(
            f"UPDATE deliveries SET state = '{LEASED}', lease_until = ?, attempts = attempts + 1, "
            f"updated_at = ? WHERE id IN (SELECT id FROM deliveries WHERE target = ? AND link = ? "
            f"AND state = '{READY}' AND run_at <= ? ORDER BY run_at, id LIMIT ?) "
            "RETURNING id, source, event_id, target, link, person, attempts, created_at, payload",
            (now + lease, now, target, link, now, limit - len(rows))).fetchall()
    rows.sort(key=lambda r: r[0])
    return [Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
            for r in rows]


def settle(conn: sqlite3.Connection, outcomes: list[Outcome], now: float) -> None:
    """Record what became of claimed deliveries and move their lines on."""
    for o in outcomes:
        d = o.delivery
        if o.state == READY:  # try again later; the line waits behind it
            conn.execute(f"UPDATE deliveries SET state = '{READY}', run_at = ?, "
                         "lease_until = NULL, "
                         "last_status = ?, last_error = ?, updated_at = ? WHERE id = ? "
                         f"AND state = '{LEASED}'", (o.run_at, o.status, o.error, now, d.id))
            continue
        conn.execute("UPDATE deliveries SET state = ?, lease_until = NULL, last_status = ?, "
                     "last_error = ?, updated_at = ? WHERE id = ?",
                     (o.state, o.status, o.error, now, d.id))
        if o.state == DONE:
            user = d.payload["user"]
            if "delete" in d.payload["actions"]:
                identity.forget(conn, d.target, d.person)
            elif o.user_id is not None:
                identity.learn(conn, d.target, o.user_id, d.person, user["email"], user["login"])
        _promote(conn, d.target, d.person, now)


def release(conn: sqlite3.Connection, deliveries: list[Claimed], run_at: float) -> None:
    """Give leased deliveries back untried (e.g. their link was paused), keeping their attempts."""
    conn.executemany(f"UPDATE deliveries SET state = '{READY}', lease_until = NULL, run_at = ?, "
                     f"attempts = attempts - 1 WHERE id = ? AND state = '{LEASED}'",
                     [(run_at, d.id) for d in deliveries])


def reclaim_expired(conn: sqlite3.Connection, now: float, every_lease: bool = False,
                    max_attempts: int | None = None) -> int:
    """Leases that outlived their holder (a hung request, a crash) go back to ready, due now.

    ``every_lease``: at start-up every lease is stale, its holder having died with the process.
    A lost attempt is still an attempt: one that used up ``max_attempts`` is dead-lettered
    (and its line moves on), so a batch that kills its holder cannot come back for ever.
    """
    expiry = float("inf") if every_lease else now
    if max_attempts is not None:
        spent = conn.execute(
            f"UPDATE deliveries SET state = '{DEAD}', lease_until = NULL, last_error = "
            "'gave up after ' || attempts || ' attempts; last: no answer was settled before "
            "its lease expired (the relay stopped or failed while sending it)', updated_at = ? "
            f"WHERE state = '{LEASED}' AND lease_until < ? AND attempts >= ? "
            "RETURNING target, person", (now, expiry, max_attempts)).fetchall()
        for target, person in spent:
            _promote(conn, target, person, now)
    return conn.execute(f"UPDATE deliveries SET state = '{READY}', lease_until = NULL, "
                        f"run_at = ?, updated_at = ? WHERE state = '{LEASED}' AND lease_until < ?",
                        (now, now, expiry)).rowcount


def next_due(conn: sqlite3.Connection, target: str, links: Iterable[str]) -> float | None:
    """When the earliest head for ``target`` on the given links falls due, if any is queued."""
    due = [conn.execute(f"SELECT min(run_at) FROM deliveries WHERE target = ? AND link = ? "
                        f"AND state = '{READY}'", (target, link)).fetchone()[0] for link in links]
    return min((float(d) for d in due if d is not None), default=None)


def prune(conn: sqlite3.Connection, finished_before: float, seen_before: float) -> int:
    """Forget finished deliveries, receipts and seen event ids past their retention."""
    removed = conn.execute("DELETE FROM deliveries WHERE state IN ('done', 'superseded') "
                           "AND updated_at < ?", (finished_before,)).rowcount
    conn.execute("DELETE FROM receipts WHERE received_at < ?", (seen_before,))
    conn.execute("DELETE FROM seen_events WHERE received_at < ?", (seen_before,))
    return int(removed)


def paused_links(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in
            conn.execute("SELECT link, reason FROM link_states WHERE paused = 1")}


def extend_lease(conn: sqlite3.Connection, deliveries: list[Claimed], until: float) -> None:
    """Keep leased deliveries leased until ``until`` (a batch sent again in parts)."""
    conn.executemany(f"UPDATE deliveries SET lease_until = ? WHERE id = ? AND state = '{LEASED}'",
                     [(until, d.id) for d in deliveries])


def accept_telling_repeat(conn: sqlite3.Connection, *args: Any) -> tuple[int, dict[str, Any], bool]:
    """``accept``, also telling whether the request was a repeat of one already taken.

    A repeat changes nothing (its stored answer is read back); anything else writes at least
    its receipt. So the connection's change count tells, without another query.
    """
    before = conn.total_changes
    status, answer = accept(conn, *args)
    return status, answer, conn.total_changes == before
