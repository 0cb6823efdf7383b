"""An open-loop load generator: POSTs signed one-event requests at a fixed rate.

It is itself Python on one core: past about 3,000 requests/s it cannot keep its rate, and
what it reports as sent per second is then its own limit, not the relay's.

``python -m bench.load URL SITE KEYFILE RATE SECONDS FIRST`` prints a JSON line with what was
sent, accepted (202) and refused. Open loop: it keeps the rate whatever the latency, so a relay
that falls behind shows it as a growing backlog rather than as a slower sender.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

from bench.common import one_event
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import Direction


async def run(url: str, site: str, key: SiteKey, rate: float, seconds: float, first: int
              ) -> dict[str, float]:
    total = int(rate * seconds)
    bodies = [json.dumps(signatures.envelope("events", site, events=[one_event(first + n)])
                         ).encode() for n in range(total)]
    counts: dict[str, float] = {"sent": 0, "accepted": 0, "refused": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def send(body: bytes) -> None:
            try:
                async with session.post(f"{url}/v1/sites/{site}/events", data=body,
                                        headers=signatures.headers(key, body,
                                                                   Direction.TO_RELAY)) as resp:
                    await resp.read()
                    counts["accepted" if resp.status == 202 else "refused"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                counts["errors"] += 1
        tasks = set()
        start = time.monotonic()
        for n, body in enumerate(bodies):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            counts["sent"] += 1
        await asyncio.gather(*tasks)
        counts["seconds"] = time.monotonic() - start
    return counts


def main() -> None:
    url, site, keyfile, rate, seconds, first = sys.argv[1:7]
    key = SiteKey(Path(keyfile).read_text().strip())
    print(json.dumps(asyncio.run(run(url, site, key, float(rate), float(seconds), int(first)))))


if __name__ == "__main__":
    main()
