"""Where a site's users' last changes are, per target: delivered, waiting (and why), refused
(the target's reason) or filtered (the rule). What ``POST /v1/sites/{site}/user-status`` answers
(relay/web/site_view.py) for the user's screen in wp-admin. Read-only, on a read connection.

Only changes whose source is the asking site, of persons that site's user ids resolve to, are
looked at: never another site's users or changes.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from relay.config import Config
from relay.constants import DEAD, DONE, LEASED, SUPERSEDED, WAITING
from relay.db import links
from relay.db.status import masked

#: At most this many users per request (the plugin asks for one screen of users).
MAX_USERS = 100


def targets_of(config: Config, site: str) -> set[str]:
    """The remote sites of ``site``'s links."""
    return {lk.remote if lk.site == site else lk.site for lk in config.links.values()
            if site in (lk.site, lk.remote)}


def user_status(conn: sqlite3.Connection, config: Config, site: str, user_ids: list[int]
                ) -> dict[str, Any]:
    states = links.read_states(conn, config)
    targets = targets_of(config, site)
    answer: dict[str, list[dict[str, Any]]] = {}
    for user_id in user_ids:
        row = conn.execute("SELECT person FROM accounts WHERE site = ? AND user_id = ?",
                           (site, user_id)).fetchone()
        entries: list[dict[str, Any]] = []
        if row is not None:
            for target in sorted(targets):
                entry = _last_change(conn, site, target, int(row[0]), states)
                if entry is not None:
                    entries.append(entry)
        answer[str(user_id)] = entries
    return {"users": answer}


def _last_change(conn: sqlite3.Connection, site: str, target: str, person: int,
                 states: dict[str, links.LinkState]) -> dict[str, Any] | None:
    delivery = conn.execute(
        "SELECT link, state, attempts, run_at, created_at, updated_at, last_status, last_error "
        f"FROM deliveries WHERE person = ? AND target = ? AND source = ? AND state != "
        f"'{SUPERSEDED}' ORDER BY id DESC LIMIT 1", (person, target, site)).fetchone()
    kept = conn.execute("SELECT link, rule, reason, at FROM filtered_changes WHERE source = ? "
                        "AND target = ? AND person = ?", (site, target, person)).fetchone()
    if kept is not None and (delivery is None or kept[3] >= delivery[4]):
        return {"target": target, "link": kept[0], "state": "filtered",
                "reason": f"{kept[1]} of {kept[0]}: {kept[2]}", "at": kept[3]}
    if delivery is None:
        return None
    link, state, attempts, run_at, created_at, updated_at, status, error = delivery
    entry = {"target": target, "link": link}
    if state == DONE:
        return {**entry, "state": "delivered", "reason": f"applied ({status})" if status
                else "applied", "at": updated_at}
    if state == DEAD:
        reason = " ".join(str(p) for p in (status, masked(error)) if p)
        return {**entry, "state": "refused", "reason": reason or "refused", "at": updated_at}
    return {**entry, "state": "waiting", "at": created_at,
            "reason": _why_waiting(states.get(link), state, attempts, run_at, status, error)}


def _why_waiting(link: links.LinkState | None, state: str, attempts: int, run_at: float,
                 status: int | None, error: str | None) -> str:
    if link is not None and link.state == links.PAUSED:
        return f"the link is paused: {link.reason}"
    if link is not None and link.state == links.DRAFT:  # (its reason names the relay's files)
        return "the link is not started: waiting for both sites to pass a connection test"
    if link is not None and link.state == links.TESTED:
        return "the link is not started: tested, waiting to be started at the relay"
    if state == LEASED:
        return "being sent"
    if state == WAITING:
        return "behind an earlier change of this user"
    if attempts or error:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run_at))
        last = " ".join(str(p) for p in (status, masked(error)) if p)
        return f"retrying at {when}: {last or 'the target did not answer'}"
    return "queued"
