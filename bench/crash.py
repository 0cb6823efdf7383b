"""kill -9, many times, during a steady signed load with deliveries in flight: what was
acknowledged against what arrived, per person and in order.

``python -m bench.crash [--cycles 20] [--seed 9]``. The loop of tests/test_faults_crash.py
(which runs 5 cycles in the suite), with a partner site standing in on loopback; the relay is
killed by its PID and started again each cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support import Partner
from tests.test_faults_crash import in_order, received, run_crash_loop


async def run(cycles: int, seed: int) -> None:
    partner = Partner()
    app = web.Application()
    app.router.add_post("/wp-json/userrelay/v1/events", partner.handle)
    app.router.add_post("/wp-json/userrelay/v1/nudge", partner.nudge)
    partner.server = TestServer(app, host="127.0.0.1")
    await partner.server.start_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            acked, arrived = await run_crash_loop(Path(folder), partner, cycles,
                                                  random.Random(seed))
    finally:
        await partner.server.close()
    acknowledged = sum(n + 1 for n in acked.values())
    lost = sum(len(set(range(acked[p] + 1)) - received(arrived.get(p, []))) for p in acked)
    disordered = [p for p, deliveries in arrived.items() if not in_order(deliveries)]
    print(f"{cycles} kill -9 cycles: {acknowledged} changes acknowledged, {lost} lost, "
          f"{len(partner.events)} deliveries received; people out of order: "
          f"{disordered or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(run(args.cycles, args.seed))


if __name__ == "__main__":
    main()
