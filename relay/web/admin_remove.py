"""The admin API's removals: ``POST /admin/sites/{site}/remove`` and
``POST /admin/links/{link}/remove`` (``userrelay sites remove`` and ``links remove``).

Without ``{"confirm": true}`` a removal only says what would happen (what is queued, which
links go with a site). Confirmed, what is queued becomes dead letters (kept, replayable), the
site's key is revoked, the configuration file loses the entries (keeping its comments), and
the relay reloads. The database is changed before the file, as on the command line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from relay.config.edit import ConfigFile
from relay.db import links
from relay.errors import InvalidRequest
from relay.web.appkeys import CONFIG, DATABASE, KEYS

log = structlog.get_logger("relay.web.admin")


Reload = Callable[[], str]


async def remove_site(relay: web.Application, site: str, document: dict[str, Any],
                      reload: Reload) -> web.Response:
    config = relay[CONFIG]
    owned = [lk.id for lk in config.links.values() if site in (lk.site, lk.remote)]
    return await _remove(relay, document, owned, site, f"site {site!r}", reload,
                         also=[("sites", site)])


async def remove_link(relay: web.Application, link: str, document: dict[str, Any],
                      reload: Reload) -> web.Response:
    return await _remove(relay, document, [link], None, f"link {link!r}", reload, also=[])


async def _remove(relay: web.Application, document: dict[str, Any], link_ids: list[str],
                  site: str | None, what: str, reload: Reload,
                  also: list[tuple[str, str]]) -> web.Response:
    unknown = set(document) - {"confirm"}
    if unknown:
        raise InvalidRequest(f"{min(unknown)}: unknown field; expected: confirm")
    confirm = document.get("confirm", False)
    if not isinstance(confirm, bool):
        raise InvalidRequest(f"confirm: got {str(confirm)[:40]!r}; expected true or false")
    config, db = relay[CONFIG], relay[DATABASE]
    file = ConfigFile(Path(config.source))
    for link in link_ids:
        file.remove("links", link)
    for key, item in also:
        file.remove(key, item)
    queued = await db.call(links.pending, link_ids, site)
    answer: dict[str, Any] = {"removed": False, "links": link_ids, "queued": queued}
    if not confirm:
        answer["confirm"] = (f"send {{\"confirm\": true}} to remove {what}: what is queued "
                             "becomes dead letters (kept, replayable)")
        return web.json_response(answer)
    reason = f"{what} was removed from the configuration"
    answer["dead_lettered"] = await db.transaction(links.retire, link_ids, site, reason,
                                                   time.time())
    if site is not None:
        relay[KEYS].revoke(site)  # its connection belongs to this thread; one quick write
    await asyncio.to_thread(file.write)
    log.info("removed", what=what, links=link_ids, by="admin API")
    answer.update(removed=True, reload=reload())
    return web.json_response(answer)
