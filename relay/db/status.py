"""What the relay is doing, read from its database: per target site and per link.

For each site: its queue by state, the age of its oldest pending delivery, its last success and
last failure (with the reason), its dead letters, and the events that came in from it and went
out to it in the last minute, and its last connection test. For each link: its state and why,
and how far its initial sync is (relay/work/initial_sync.py).
``snapshot`` feeds both ``userrelay status`` and the admin API's ``GET /admin/status``, so they
always show the same numbers.

Read-only; safe to call while the daemon runs (WAL readers never block the writer). Every
statement is a search of an index, never a scan of a table, so a snapshot stays cheap with
millions of deliveries kept (tests/test_status.py checks the query plans). Never includes a key,
a password hash or an event's contents; errors reported by sites are masked like log lines.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from relay.config import Config
from relay.constants import DEAD, DONE, LEASED, READY, WAITING
from relay.db import cursors, links, reconcile_runs, scope
from relay.db.queue import IN_LINE
from relay.logs import redact_secrets

#: The window of the per-minute rates, in seconds.
RATE_WINDOW = 60.0
#: How ``render`` names what a link's rules did that is not a filter.
_FILTERED = {scope.UNJUDGED: "let through unjudged (the plugin sent no roles: update it)"}


def snapshot(conn: sqlite3.Connection, config: Config, now: float | None = None
             ) -> dict[str, Any]:
    now = time.time() if now is None else now
    since = now - RATE_WINDOW
    # INDEXED BY: left to itself, SQLite walks the whole table in (site, event_id) order to
    # save the sort of GROUP BY; the index of received_at reads only the last minute.
    events_in = dict(conn.execute("SELECT site, count(*) FROM seen_events INDEXED BY "
                                  "seen_events_age WHERE received_at >= ? GROUP BY site",
                                  (since,)).fetchall())
    keys = {site for (site,) in conn.execute("SELECT site FROM site_keys")}
    tests = last_tests(conn)
    sites = {}
    for site in config.sites.values():
        sites[site.id] = {
            "label": site.label, "url": site.url, "has_key": site.id in keys,
            "last_test": tests.get(site.id),
            **_queue(conn, site.id, now),
            "events_in_per_minute": events_in.get(site.id, 0),
            "events_out_per_minute": conn.execute(
                f"SELECT count(*) FROM deliveries WHERE state = '{DONE}' AND target = ? "
                "AND updated_at >= ?", (site.id, since)).fetchone()[0],
        }
    states = link_states(conn, config)
    reconciled = reconcile_runs.last_runs(conn, list(config.links))
    filtered = scope.counts(conn)
    per_link = {link.id: {"site": link.site, "remote": link.remote,
                          "direction": link.direction, **states[link.id],
                          "backfill": cursors.progress(conn, config, link.id, now),
                          "last_reconcile": reconciled.get(link.id),
                          "filtered": filtered.get(link.id, {})}
                for link in config.links.values()}
    return {"at": round(now, 3), "sites": sites, "links": per_link}


def _queue(conn: sqlite3.Connection, target: str, now: float) -> dict[str, Any]:
    """One target's queue: pending by state, oldest pending, last success and failure, dead."""
    in_line, oldest_id = conn.execute(
        f"SELECT count(*), min(id) FROM deliveries WHERE target = ? AND {IN_LINE}",
        (target,)).fetchone()
    ready = conn.execute(f"SELECT count(*) FROM deliveries WHERE target = ? AND state = '{READY}'",
                         (target,)).fetchone()[0]
    leased = conn.execute(f"SELECT count(*) FROM deliveries WHERE target = ? "
                          f"AND state = '{LEASED}'", (target,)).fetchone()[0]
    oldest = None
    if oldest_id is not None:
        # The line with the lowest id is the oldest: deliveries are numbered as they come in.
        (created,) = conn.execute("SELECT created_at FROM deliveries WHERE id = ?",
                                  (oldest_id,)).fetchone()
        oldest = round(max(now - created, 0.0), 1)
    (last_done,) = conn.execute(f"SELECT max(updated_at) FROM deliveries WHERE state = '{DONE}' "
                                "AND target = ?", (target,)).fetchone()
    failure = conn.execute(
        "SELECT updated_at, id, state, last_status, last_error FROM deliveries "
        "WHERE last_error IS NOT NULL AND target = ? ORDER BY updated_at DESC LIMIT 1",
        (target,)).fetchone()
    dead = conn.execute(f"SELECT count(*) FROM deliveries WHERE state = '{DEAD}' AND target = ?",
                        (target,)).fetchone()[0]
    return {
        "pending": {WAITING: in_line - ready - leased, READY: ready, LEASED: leased},
        "oldest_pending_age": oldest,
        "last_success_at": last_done,
        "last_failure": None if failure is None else {
            "at": failure[0], "delivery": failure[1], "state": failure[2],
            "status": failure[3], "error": masked(failure[4])},
        "dead_letters": dead,
    }


def link_states(conn: sqlite3.Connection, config: Config) -> dict[str, dict[str, Any]]:
    """Each configured link's state (draft, tested, active or paused), why, and since when:
    as relay/db/links.py works it out, the one place that knows."""
    return {link_id: {"state": s.state, "reason": s.reason, "since": s.since,
                      "started": s.started, "missing": list(s.missing)}
            for link_id, s in links.read_states(conn, config).items()}


def last_tests(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Each site's last connection test: when, whether it passed, which checks failed."""
    return {site: {"at": t.tested_at, "passed": t.passed, "passed_at": t.passed_at,
                   "failed": [str(c.get("name")) for c in t.checks if c.get("status") == "fail"]}
            for site, t in links.site_tests(conn).items()}


def masked(text: str | None) -> str | None:
    """``text`` with anything that looks like a key or a password hash masked, as in logs."""
    return None if text is None else str(redact_secrets(None, "", {"text": text})["text"])


def render(status: dict[str, Any], config_flag: str = "") -> str:
    """The snapshot for a terminal; ``config_flag`` (`` --config FILE``) ends its hints."""
    now = status["at"]
    lines = ["Sites:"]
    for site_id, s in status["sites"].items():
        no_key = "" if s["has_key"] else (f"  NO KEY: run userrelay keys generate {site_id}"
                                              f"{config_flag}")
        lines.append(f"  {site_id} ({s['label']}, {s['url']}){no_key}")
        pending = s["pending"]
        age = s["oldest_pending_age"]
        lines.append(f"    queue: {pending[WAITING]} waiting, {pending[READY]} ready, "
                     f"{pending[LEASED]} leased"
                     + (f"; oldest {_duration(age)} old" if age is not None else "")
                     + f"; dead letters {s['dead_letters']}")
        lines.append(f"    last minute: {s['events_in_per_minute']} events in, "
                     f"{s['events_out_per_minute']} delivered")
        test = s["last_test"]
        if test is not None:
            result = "passed" if test["passed"] else f"FAILED ({', '.join(test['failed'])})"
            lines.append(f"    last connection test: {_duration(now - test['at'])} ago, {result}")
        success = s["last_success_at"]
        lines.append("    last delivered to it: "
                     + (f"{_duration(now - success)} ago" if success is not None else "never"))
        failure = s["last_failure"]
        if failure is not None:
            status_text = f" ({failure['status']})" if failure["status"] is not None else ""
            lines.append(f"    last failed delivery: {_duration(now - failure['at'])} ago"
                         f"{status_text}, delivery {failure['delivery']} ({failure['state']}): "
                         f"{failure['error']}")
    lines.append("Links:")
    for link_id, lk in status["links"].items():
        why = f": {lk['reason']}" if lk["reason"] else ""
        since = f" for {_duration(now - lk['since'])}" if lk["since"] is not None else ""
        lines.append(f"  {link_id} ({lk['site']} -> {lk['remote']}, {lk['direction']}): "
                     f"{lk['state']}{since}{why}")
        if lk.get("backfill") is not None:
            lines.append("    " + cursors.render(link_id, lk["backfill"], bar=False))
        if lk.get("filtered"):  # kept back by its rules (unjudged: let through, no roles)
            lines.append("    " + ", ".join(f"{_FILTERED.get(rule, 'filtered ' + rule)}: {n}"
                                            for rule, n in lk["filtered"].items()))
        last = lk.get("last_reconcile")
        if last is not None:
            lines.append(f"    last reconciliation: {_duration(now - last['finished_at'])} ago"
                         + (f", FAILED: {masked(last['error'])}" if "error" in last else
                            f", {last['in_step']} in step, {last['missing']} missing, "
                            f"{last['differs']} differ, {last['conflicts']} conflicts"
                            + (f", {last['enqueued']} repairs queued"
                               if last.get("enqueued") else "")))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
