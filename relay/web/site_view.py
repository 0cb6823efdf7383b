"""``POST /v1/sites/{site}/overview``: a site's own view of the relay, for its Settings page;
``POST /v1/sites/{site}/user-status``: where its users' last changes are, for a user's screen.

Signed with the site -> relay secret, as every request a site makes (``authenticated_body``),
its body ``{"operation": "overview", "site": …}``, each signed request taken once. Read-only.
It answers only what concerns the site that signed: the links it is part of (the other site's
id and label, the direction and actions as seen from this site, the state), how many of its
own changes are queued at the relay and how many changes wait to be applied to it, and its own
changes given up on (dead letters) with the reason. Never another site's users, queue or
errors, never a key, never a path or setting of the relay.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from aiohttp import web

from relay.config import Config
from relay.constants import DEAD, PENDING_STATES
from relay.db import links, user_status
from relay.db.status import masked
from relay.db.store import connect_sync
from relay.errors import InvalidRequest
from relay.model import events
from relay.web.appkeys import ADMIN_URL, CONFIG, REPLAYS
from relay.web.ingest import PROTOCOL_ANSWER, answers_errors, authenticated_body

#: How many of its latest dead letters a site is shown.
DEAD_SHOWN = 10
#: What each state means to a site admin (the relay's own reasons name its files).
STATE_TEXT = {
    links.DRAFT: "waiting for both sites to pass a connection test",
    links.TESTED: "tested; waiting to be started at the relay",
    links.ACTIVE: "active: changes are delivered",
    links.PAUSED: "paused at the relay; changes keep queueing",
}
_SEEN_FROM_REMOTE = {"push": "pull", "pull": "push", "bidirectional": "bidirectional"}


def overview(conn: sqlite3.Connection, config: Config, site: str) -> dict[str, Any]:
    states = links.read_states(conn, config)
    seen = []
    for link in config.links.values():
        if site not in (link.site, link.remote):
            continue
        mine = site == link.site
        other = link.remote if mine else link.site
        direction = link.direction if mine else _SEEN_FROM_REMOTE[link.direction]
        sends = link.outgoing if mine else link.incoming
        takes = link.incoming if mine else link.outgoing
        state = states[link.id].state
        seen.append({"link": link.id, "remote": other, "remote_label": config.sites[other].label,
                     "direction": direction,
                     "sends": sorted(sends) if direction != "pull" else [],
                     "takes": sorted(takes) if direction != "push" else [],
                     "state": state, "state_text": STATE_TEXT[state]})
    pending = ",".join(f"'{s}'" for s in PENDING_STATES)
    queued_out = conn.execute(f"SELECT count(*) FROM deliveries WHERE source = ? AND state IN "
                              f"({pending})", (site,)).fetchone()[0]
    queued_in = conn.execute(f"SELECT count(*) FROM deliveries WHERE target = ? AND state IN "
                             f"({pending})", (site,)).fetchone()[0]
    dead = conn.execute(f"SELECT count(*) FROM deliveries WHERE source = ? AND state = '{DEAD}'",
                        (site,)).fetchone()[0]
    rows = conn.execute(
        "SELECT id, target, actions, last_status, last_error, updated_at, "
        "iif(json_valid(payload), json_extract(payload, '$.user.login'), NULL) FROM deliveries "
        f"WHERE source = ? AND state = '{DEAD}' ORDER BY updated_at DESC LIMIT ?",
        (site, DEAD_SHOWN)).fetchall()
    return {"site": site, "links": seen,
            "queued": {"sent_by_this_site": queued_out, "to_apply_here": queued_in},
            "dead_letters": {"count": dead, "latest": [
                {"delivery": r[0], "to": r[1], "actions": r[2].split(","), "status": r[3],
                 "reason": masked(r[4]), "at": r[5], "login": r[6]} for r in rows]}}


@answers_errors
async def site_overview(request: web.Request) -> web.Response:
    site, body = await authenticated_body(request)
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    events.check_envelope(document, "overview", site)
    request.app[REPLAYS].first_use(request.headers["webhook-id"])
    config = request.app[CONFIG]

    def read() -> dict[str, Any]:
        conn = connect_sync(config.database_path)
        try:
            return overview(conn, config, site)
        finally:
            conn.close()
    answer = await asyncio.to_thread(read)
    admin = request.app.get(ADMIN_URL)
    answer["console"] = f"{admin}/console/" if admin else None
    return web.json_response(answer, headers=PROTOCOL_ANSWER)


def _user_ids(document: dict[str, Any]) -> list[int]:
    ids = document.get("user_ids")
    if (not isinstance(ids, list) or not 0 < len(ids) <= user_status.MAX_USERS
            or any(isinstance(i, bool) or not isinstance(i, int) or i <= 0 for i in ids)):
        raise InvalidRequest(f"user_ids: got {json.dumps(ids)[:80]}; expected a list of 1 to "
                             f"{user_status.MAX_USERS} user ids (positive integers)")
    return list(dict.fromkeys(ids))


@answers_errors
async def site_user_status(request: web.Request) -> web.Response:
    """Signed and taken once as ``overview``; answers only about the signing site's own users'
    changes (relay/db/user_status.py)."""
    site, body = await authenticated_body(request)
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    events.check_envelope(document, "user-status", site)
    user_ids = _user_ids(document)
    request.app[REPLAYS].first_use(request.headers["webhook-id"])
    config = request.app[CONFIG]

    def read() -> dict[str, Any]:
        conn = connect_sync(config.database_path)
        try:
            return user_status.user_status(conn, config, site, user_ids)
        finally:
            conn.close()
    return web.json_response(await asyncio.to_thread(read), headers=PROTOCOL_ANSWER)
