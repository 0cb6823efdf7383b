"""What stands between the network and the relay's handlers.

- ``last_resort``: a middleware for an error nobody meant to raise. The caller gets a 500 that
  says the log has the reason, and the log gets the traceback (aiohttp's own "Error handling
  request" line would reach our JSON log without it). Input never gets here on purpose: every
  refusal is a ``RequestRejected`` answered by the handler's own wrapper.

It knows HTTP and sockets, nothing of events or sites.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("relay.guard")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def last_resort(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # aiohttp's own answers: 404, 405, 413, ...
    except Exception:
        log.exception("request_crashed", method=request.method, path=request.path,
                      site=request.match_info.get("site"))
        return web.json_response({"error": "the relay failed to answer this request; its log "
                                  "says why"}, status=500)
