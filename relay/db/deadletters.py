"""Dead letters: list them, replay them, purge them; chosen by one filter.

A dead letter is a delivery in state ``dead``: the target refused it, or it failed for too long.
A filter names which: by delivery ids, source site, target site, and a time window on when they
died. Each function takes the connection first and runs inside the caller's transaction, like
relay/db/queue.py, so the daemon (admin API) and the CLI (its own connection, with or without the
daemon running) share them.

Replaying puts a delivery back into its person's line where it was: it keeps its id, and a
line's head is its oldest pending delivery, so it goes out before that person's newer pending
deliveries to the same target (a newer head that is not in flight steps back behind it). Sent
last instead, its old values would overwrite the newer ones at the partner. Its attempts start
again from zero. Couriers find it at their next look at the queue (at most
``relay.work.courier.IDLE_POLL`` seconds), or at once when the daemon itself replays it.

Never returns an event's contents: a listing names the person by login and email only, and a
site's error text is masked as log lines are (it may quote what it was sent).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay.config import Config, parse_duration
from relay.constants import DEAD, LEASED, READY, WAITING
from relay.db import queue
from relay.db.queue import IN_LINE
from relay.db.status import masked
from relay.errors import InvalidRequest, UnknownSite

#: Dead letters listed when no limit is given, and the most one listing returns.
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
#: Dead letters replayed per transaction, so a large replay never holds the writer for long
#: (about 25 ms per batch): ingest commits go on between batches.
REPLAY_BATCH = 500
_UNIX_TIME = re.compile(r"^\s*[0-9]{1,12}(?:\.[0-9]{1,9})?\s*$", re.ASCII)
_ID_DIGITS = re.compile(r"[0-9]{1,19}")
#: Delivery ids are SQLite integers.
MAX_ID = 2**63 - 1
#: Unix seconds a time window may name (the end of year 9999).
MAX_TIME = 253_402_300_799
#: Delivery ids one filter may name (each is a parameter of one SQL statement).
MAX_IDS = 10_000


@dataclass(frozen=True)
class Filter:
    """Which dead letters: every given criterion must hold. ``everything`` stands for none."""

    ids: tuple[int, ...] = ()
    source: str | None = None
    target: str | None = None
    since: float | None = None   # died at or after (unix seconds)
    until: float | None = None   # died before
    everything: bool = False

    @property
    def names_some(self) -> bool:
        return bool(self.ids) or any(v is not None for v in (self.source, self.target,
                                                              self.since, self.until))

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters; spelt so the ``deliveries_dead`` index serves."""
        terms: list[str] = [f"state = '{DEAD}'"]
        params: list[Any] = []
        if self.ids:
            terms.append(f"id IN ({', '.join('?' * len(self.ids))})")
            params += list(self.ids)
        for term, value in (("source = ?", self.source), ("target = ?", self.target),
                            ("updated_at >= ?", self.since), ("updated_at < ?", self.until)):
            if value is not None:
                terms.append(term)
                params.append(value)
        return " AND ".join(terms), params


def parse_filter(document: dict[str, Any], config: Config, now: float | None = None,
                 allow: frozenset[str] = frozenset()) -> Filter:
    """A filter from a JSON body or query (``ids``, ``source``, ``target``, ``since``,
    ``until``, ``all``); ``InvalidRequest`` or ``UnknownSite`` names the offending field.
    ``allow``: further keys the caller reads itself (``limit``)."""
    now = time.time() if now is None else now
    known = {"ids", "source", "target", "since", "until", "all"} | allow
    for key in document:
        if key not in known:
            raise InvalidRequest(f"{key}: unknown; expected any of {', '.join(sorted(known))}")
    ids = document.get("ids") or []
    if isinstance(ids, str):  # a query parameter: ids=12,15
        ids = [i.strip() for i in ids.split(",") if i.strip()]
    elif isinstance(ids, int):
        ids = [ids]
    if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
        raise InvalidRequest(f"ids: got {_shown(ids)}; expected delivery ids (whole numbers "
                             f"from 1 to {MAX_ID})")
    if len(ids) > MAX_IDS:
        raise InvalidRequest(f"ids: got {len(ids)}; at most {MAX_IDS} at once (or name a "
                             "source, target or time window instead)")
    sites = {}
    for key in ("source", "target"):
        value = document.get(key)
        if value is not None and (not isinstance(value, str) or value not in config.sites):
            raise UnknownSite(f"{key}: no site {_shown(value)} is configured; configured sites: "
                              f"{', '.join(config.sites) or '(none)'}")
        sites[key] = value
    everything = document.get("all", False)
    if everything not in (True, False, "true", "false", "1", "0"):
        raise InvalidRequest(f"all: got {_shown(everything)}; expected true or false")
    return Filter(ids=tuple(sorted({int(i) for i in ids})), source=sites["source"],
                  target=sites["target"], since=parse_when(document.get("since"), "since", now),
                  until=parse_when(document.get("until"), "until", now),
                  everything=everything in (True, "true", "1"))


def parse_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _is_id(value) or int(value) > MAX_LIMIT:
        raise InvalidRequest(f"limit: got {_shown(value)}; expected a whole number from 1 to "
                             f"{MAX_LIMIT}")
    return int(value)


def parse_when(value: Any, name: str, now: float) -> float | None:
    """Unix seconds from a number, an ISO 8601 time (UTC unless it says), or a duration ago
    such as ``30m``, ``2h``, ``1d``."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and 0 <= value <= MAX_TIME:
        return float(value)
    if isinstance(value, str):
        if _UNIX_TIME.match(value):
            return float(value)
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError):
            pass
        else:
            if math.isfinite(seconds):
                return now - seconds
        try:
            moment = datetime.fromisoformat(value.strip())
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise InvalidRequest(f"{name}: got {_shown(value)}; expected unix seconds, an ISO 8601 "
                         "time such "
                         "as 2026-11-27T13:00:00Z, or a duration ago such as 30m, 2h or 1d")


def _is_id(value: Any) -> bool:
    """A whole number from 1 to 2^63 - 1 (SQLite's integers), or such a number in ASCII digits
    (``str.isdigit`` would take "²", which ``int`` refuses)."""
    if isinstance(value, str):
        if not _ID_DIGITS.fullmatch(value.strip()):
            return False
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _shown(value: Any) -> str:
    """A value as the caller sent it, for an error message: short, and never failing."""
    try:
        text = repr(value)  # a lone surrogate is escaped
    except (ValueError, RecursionError):  # an integer of thousands of digits
        text = "a value"
    return text if len(text) <= 80 else text[:80] + "…"


def count(conn: sqlite3.Connection, flt: Filter) -> int:
    where, params = flt.where()
    return int(conn.execute(f"SELECT count(*) FROM deliveries WHERE {where}",
                            params).fetchone()[0])


def list_dead(conn: sqlite3.Connection, flt: Filter, limit: int = DEFAULT_LIMIT
              ) -> list[dict[str, Any]]:
    """The dead letters the filter names, the most recent first, at most ``limit``."""
    where, params = flt.where()
    # Pick the ids first: otherwise every matching row's payload is read before the sort.
    # A payload SQLite cannot read as JSON (one stored with NaN before ingest refused it) is
    # read here instead, so one old row cannot break the listing ("malformed JSON").
    rows = conn.execute(
        "SELECT id, source, target, link, event_id, person, "
        "iif(json_valid(payload), json_extract(payload, '$.user.login'), NULL), "
        "iif(json_valid(payload), json_extract(payload, '$.user.email'), NULL), actions, "
        "attempts, last_status, last_error, created_at, updated_at, "
        "iif(json_valid(payload), NULL, payload) FROM deliveries WHERE id IN (SELECT id FROM "
        f"deliveries WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT ?) "
        "ORDER BY updated_at DESC, id DESC", [*params, limit]).fetchall()
    return [{"delivery": r[0], "source": r[1], "target": r[2], "link": r[3], "event_id": r[4],
             "person": r[5], **_person(r[6], r[7], r[14]), "actions": r[8].split(","),
             "attempts": r[9], "last_status": r[10], "last_error": masked(r[11]),
             "queued_at": r[12], "dead_at": r[13]} for r in rows]


def _person(login: Any, email: Any, unreadable: str | None) -> dict[str, Any]:
    if unreadable is not None:
        try:
            user = json.loads(unreadable)["user"]
            login, email = user.get("login"), user.get("email")
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass
    return {"login": login if isinstance(login, str) else None,
            "email": email if isinstance(email, str) else None}


def in_batches(conn: sqlite3.Connection, flt: Filter) -> list[Filter]:
    """The dead letters the filter names now, as filters of at most ``REPLAY_BATCH`` ids."""
    where, params = flt.where()
    ids = [int(r[0]) for r in conn.execute(f"SELECT id FROM deliveries WHERE {where} "
                                           "ORDER BY id", params)]
    return [Filter(ids=tuple(ids[i:i + REPLAY_BATCH])) for i in range(0, len(ids), REPLAY_BATCH)]


def replay(conn: sqlite3.Connection, flt: Filter, now: float) -> dict[str, list[int]]:
    """Put the dead letters the filter names back into their lines; returns their ids by
    target (whose couriers should look at the queue)."""
    where, params = flt.where()
    replayed: dict[str, list[int]] = {}
    for delivery, target, person in conn.execute(
            f"SELECT id, target, person FROM deliveries WHERE {where} ORDER BY id",
            params).fetchall():
        line = (target, person)
        in_flight = conn.execute(f"SELECT 1 FROM deliveries WHERE target = ? AND person = ? "
                                 f"AND {IN_LINE} AND state = '{LEASED}'", line).fetchone()
        conn.execute(f"UPDATE deliveries SET state = '{WAITING}', attempts = 0, run_at = ?, "
                     "lease_until = NULL, last_status = NULL, last_error = NULL, updated_at = ? "
                     "WHERE id = ?", (now, now, delivery))
        if in_flight is None:
            # It is older than anything pending in its line: a newer head steps back behind it.
            conn.execute(f"UPDATE deliveries SET state = '{WAITING}', updated_at = ? "
                         f"WHERE target = ? AND person = ? AND {IN_LINE} AND state = '{READY}' "
                         "AND id > ?", (now, *line, delivery))
            queue._promote(conn, target, person, now)  # the line's own rule picks its head
        # else: the head being sent now finishes first; settling it promotes the oldest.
        replayed.setdefault(target, []).append(delivery)
    return replayed


def purge(conn: sqlite3.Connection, flt: Filter) -> int:
    """Delete the dead letters the filter names; nothing pending is touched."""
    where, params = flt.where()
    return int(conn.execute(f"DELETE FROM deliveries WHERE {where}", params).rowcount)


def require_choice(flt: Filter, verb: str) -> None:
    """Replaying or purging every dead letter must be asked for by name."""
    if not flt.names_some and not flt.everything:
        raise InvalidRequest(f"name the dead letters to {verb}: delivery ids, a source, a "
                             "target, a time window (since, until), or all")


def format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(letters: list[dict[str, Any]], total: int) -> str:
    """A listing for a terminal."""
    if not letters:
        return "No dead letters."
    lines = []
    for d in letters:
        status = f", status {d['last_status']}" if d["last_status"] is not None else ""
        lines.append(f"{d['delivery']}  {format_time(d['dead_at'])}  {d['source']} -> "
                     f"{d['target']} ({d['link']})  event {d['event_id']}  person {d['person']} "
                     f"({d['login']}, {d['email']})  {','.join(d['actions'])}  "
                     f"attempts {d['attempts']}{status}")
        lines.append(f"    {d['last_error'] or '(no error recorded)'}")
    more = f" (the {len(letters)} most recent shown)" if total > len(letters) else ""
    lines.append(f"{total} dead letter(s){more}.")
    return "\n".join(lines)
