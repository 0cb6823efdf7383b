"""The admin API's dead letters: list them (filtered), replay them, purge them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from aiohttp import web

from relay.db import deadletters
from relay.web.admin_requests import (
    body_of,
    read_db,
    relay_of,
)
from relay.web.appkeys import CONFIG, COURIERS, DATABASE

log = structlog.get_logger("relay.web.admin_dead")


async def list_dead(request: web.Request) -> web.Response:
    query = dict(request.query)
    flt = deadletters.parse_filter(query, relay_of(request)[CONFIG], allow=frozenset({"limit"}))
    limit = deadletters.parse_limit(query.get("limit"))

    def read(conn: Any) -> tuple[int, list[dict[str, Any]]]:
        return deadletters.count(conn, flt), deadletters.list_dead(conn, flt, limit)
    total, letters = await read_db(request, read)
    return web.json_response({"count": total, "dead_letters": letters})


async def replay_dead(request: web.Request) -> web.Response:
    relay = relay_of(request)
    flt = deadletters.parse_filter(await body_of(request), relay[CONFIG])
    deadletters.require_choice(flt, "replay")
    replayed: dict[str, list[int]] = {}
    for batch in await read_db(request, deadletters.in_batches, flt):
        done = await relay[DATABASE].transaction(deadletters.replay, batch, time.time())
        for target, ids in done.items():
            replayed.setdefault(target, []).extend(ids)
            relay[COURIERS][target].wake()
    ids = sorted(i for batch in replayed.values() for i in batch)
    log.info("dead_letters_replayed", deliveries=len(ids),
             targets={t: len(b) for t, b in replayed.items()}, by="admin API")
    return web.json_response({"replayed": len(ids), "deliveries": ids})


async def purge_dead(request: web.Request) -> web.Response:
    relay = relay_of(request)
    flt = deadletters.parse_filter(await body_of(request), relay[CONFIG])
    deadletters.require_choice(flt, "purge")
    purged = await relay[DATABASE].transaction(deadletters.purge, flt)
    log.info("dead_letters_purged", deliveries=purged, by="admin API",
             filter=json.dumps(_described(flt)))
    return web.json_response({"purged": purged})


def _described(flt: deadletters.Filter) -> dict[str, Any]:
    return {k: v for k, v in (("ids", list(flt.ids)), ("source", flt.source),
                              ("target", flt.target), ("since", flt.since),
                              ("until", flt.until), ("all", flt.everything)) if v}
