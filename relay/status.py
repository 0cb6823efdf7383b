"""What the relay is doing, read from its database: per link and per target site.

Read-only; safe to call while the daemon runs (WAL readers never block the writer). Never
includes a key or an event's contents.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from relay.config import Config
from relay.queue import IN_LINE


def snapshot(conn: sqlite3.Connection, config: Config) -> dict[str, Any]:
    now = time.time()
    pending: dict[str, dict[str, int]] = {}
    for target, state, n in conn.execute(
            f"SELECT target, state, count(*) FROM deliveries WHERE {IN_LINE} "
            "GROUP BY target, state"):
        pending.setdefault(target, {})[state] = n
    oldest = dict(conn.execute(f"SELECT target, min(created_at) FROM deliveries WHERE {IN_LINE} "
                               "GROUP BY target").fetchall())
    dead = dict(conn.execute("SELECT target, count(*) FROM deliveries WHERE state = 'dead' "
                             "GROUP BY target").fetchall())
    paused = {link: (reason, changed) for link, reason, changed in conn.execute(
        "SELECT link, reason, changed_at FROM link_states WHERE paused = 1")}
    keys = {site for (site,) in conn.execute("SELECT site FROM site_keys")}
    sites = {}
    for site in config.sites.values():
        sites[site.id] = {
            "label": site.label, "url": site.url, "has_key": site.id in keys,
            "pending": pending.get(site.id, {}),
            "oldest_pending_age": round(now - oldest[site.id], 1) if site.id in oldest else None,
            "dead_letters": dead.get(site.id, 0),
        }
    links = {}
    for link in config.links.values():
        reason = paused.get(link.id)
        links[link.id] = {
            "site": link.site, "remote": link.remote, "direction": link.direction,
            "state": "paused" if reason else "active",
            "paused_reason": reason[0] if reason else None,
        }
    return {"sites": sites, "links": links}


def render(status: dict[str, Any]) -> str:
    """The snapshot for a terminal."""
    lines = ["Sites:"]
    for site_id, s in status["sites"].items():
        queued = ", ".join(f"{n} {state}" for state, n in sorted(s["pending"].items())) or "none"
        age = f", oldest {s['oldest_pending_age']:.0f}s" if s["oldest_pending_age"] else ""
        no_key = "" if s["has_key"] else f"; NO KEY: run userrelay keys generate {site_id}"
        lines.append(f"  {site_id} ({s['label']}, {s['url']}): pending {queued}{age}; "
                     f"dead letters {s['dead_letters']}{no_key}")
    lines.append("Links:")
    for link_id, lk in status["links"].items():
        why = f": {lk['paused_reason']}" if lk["paused_reason"] else ""
        lines.append(f"  {link_id} ({lk['site']} -> {lk['remote']}, {lk['direction']}): "
                     f"{lk['state']}{why}")
    return "\n".join(lines)
