"""A fast partner site for benchmarks: verifies each signed batch, applies nothing, counts events.

``python -m bench.partner_server PORT KEYFILE``; ``GET /count`` answers how many events arrived.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aiohttp import web

from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import Direction
from relay.model.events import check_envelope
from relay.sites.client import plugin_url

COUNT = web.AppKey("count", list)


async def take(request: web.Request) -> web.Response:
    body = await request.read()
    h = request.headers
    signatures.verify([request.app[KEY]], Direction.TO_SITE, h.get("webhook-id"),
                      h.get("webhook-timestamp"), h.get("webhook-signature"), body, 300)
    document = json.loads(body)
    check_envelope(document, "events", document.get("site"))
    events = document["events"]
    first = request.app[COUNT][0]
    request.app[COUNT][0] += len(events)
    # Each person gets a user id of their own here, as on a real site.
    return web.json_response({"results": [{"id": e["id"], "status": 200, "user_id": first + n + 1}
                                          for n, e in enumerate(events)]},
                             headers={"userrelay-protocol": "2"})


async def count(request: web.Request) -> web.Response:
    return web.json_response({"events": request.app[COUNT][0]})


KEY = web.AppKey("key", SiteKey)


def main() -> None:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[KEY] = SiteKey(Path(sys.argv[2]).read_text().strip())
    app[COUNT] = [0]
    app.router.add_post(plugin_url("", "events"), take)
    app.router.add_get("/count", count)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=loop)


if __name__ == "__main__":
    main()
