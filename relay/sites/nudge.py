"""Telling a site's plugin that the relay is back, so it sends its outbox now.

A plugin that could not reach the relay waits out a backoff step (10 s, 30 s, 2 min, 10 min,
…) before it tries again; nothing would tell it the relay is back. The relay therefore nudges
(a signed ``nudge`` call, docs/protocol.md): every site it holds a key for, once it listens
after a start; and a site whose deliveries succeed again after failing. A nudge is a courtesy:
a failed one is logged and forgotten (the plugin's own backoff still runs).
"""

from __future__ import annotations

import asyncio

import aiohttp
import structlog

from relay import __version__
from relay.config import Config, Site
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.sites.client import PluginClient

log = structlog.get_logger("relay.sites.nudge")
#: Seconds a nudge may take; it only asks the plugin to start a send in the background.
TIMEOUT = 5.0
#: Seconds after start-up before the first nudges, so the listener is surely accepting.
AFTER_START = 1.0


async def nudge(session: aiohttp.ClientSession, site: Site, key: SiteKey, why: str) -> bool:
    """Ask ``site``'s plugin to send its outbox now; whether it said yes."""
    client = PluginClient(site.id, site.url, key, session, TIMEOUT, site.ca_file)
    try:
        reply = await client.call("nudge")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.info("nudge_failed", site=site.id, why=why, error=client.unreachable("nudge", exc))
        return False
    if reply.status != 202:
        log.info("nudge_failed", site=site.id, why=why,
                 error=f"site answered {reply.status}{reply.excerpt(120)}")
        return False
    log.info("nudged", site=site.id, why=why)
    return True


async def nudge_all(config: Config, keys: KeyStore, why: str) -> None:
    """Nudge every site the relay holds a key for, at once."""
    async with aiohttp.ClientSession(headers={"User-Agent": f"UserRelay/{__version__}"}) as session:
        await asyncio.gather(*(nudge(session, site, key, why) for site in config.sites.values()
                               if (key := keys.get(site.id)) is not None))
