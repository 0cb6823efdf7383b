"""What every admin API handler shares: the relay application it acts on, its token's key,
reading a JSON body, a site or link id from the path, and reads on a connection of their own.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from aiohttp import web

from relay.db.store import connect_sync
from relay.errors import (
    InvalidEvent,
    InvalidRequest,
    UnknownLink,
    UnknownSite,
)
from relay.model import events
from relay.web.appkeys import CONFIG, RELOAD

T = TypeVar("T")
P = ParamSpec("P")


#: The longest grace a key rotation may give the previous key (seconds), and the longest
#: reason for a pause an admin may give.
MAX_GRACE = 30 * 86400.0
MAX_REASON_CHARS = 1000
#: Seconds between a change written by the admin API and the reload it asks for.
RELOAD_DELAY = 1.0


#: The relay application whose database, configuration and couriers the admin API uses.
RELAY = web.AppKey("relay", web.Application)


TOKEN = web.AppKey("admin_token", str)


def relay_of(request: web.Request) -> web.Application:
    return request.app[RELAY]


async def read_db(request: web.Request, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                  *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(connection, *args)`` on a reading connection of its own, off the loop."""
    path = relay_of(request)[CONFIG].database_path

    def read() -> T:
        conn = connect_sync(path)
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.close()
    return await asyncio.to_thread(read)


async def body_of(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body:
        return {}
    try:
        document = json.loads(body)  # ValueError covers UnicodeDecodeError
        events.check_values(document, "")  # no text SQLite cannot store, no NaN, no 2^64
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not JSON; send an object such as "
                             "{\"target\": \"shop\"}") from None
    except InvalidEvent as exc:
        raise InvalidRequest(exc.message) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object such as {\"target\": \"shop\"}")
    return document


def site_of(request: web.Request) -> str:
    config = relay_of(request)[CONFIG]
    site = request.match_info["site"]
    if site not in config.sites:
        raise UnknownSite(f"no site {site!r} is configured; configured sites: "
                          f"{', '.join(config.sites) or '(none)'}")
    return site


def link_of(request: web.Request) -> str:
    config = relay_of(request)[CONFIG]
    link = request.match_info["link"]
    if link not in config.links:
        raise UnknownLink(f"no link {link!r} is configured; configured links: "
                          f"{', '.join(config.links) or '(none)'}")
    return link


def only_fields(document: dict[str, Any], allowed: set[str]) -> None:
    for key in document:
        if key not in allowed:
            raise InvalidRequest(f"{key}: unknown; expected "
                                 f"{', '.join(sorted(allowed)) or 'an empty body'}")


def reload_soon(relay: web.Application) -> str:
    """Ask the daemon to read its configuration file again; what the answer says of it."""
    reload = relay.get(RELOAD)
    if reload is None:
        return ("needed: this relay does not run as `userrelay serve`; reload it "
                "(systemctl reload userrelay)")
    # A moment later: the answer, and the page a browser loads right after it, go out before
    # the admin listener restarts with the new app.
    asyncio.get_running_loop().call_later(RELOAD_DELAY, reload)
    return "started"
