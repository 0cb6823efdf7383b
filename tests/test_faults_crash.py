"""kill -9 during ingest and delivery, again and again: nothing acknowledged is lost, and each
person's changes reach the partner in the order they happened.

A site sends a steady stream of numbered changes of a few people, one request at a time, as
its outbox would: a request that got no 202 is sent again. Meanwhile the relay process is killed
(SIGKILL) at random moments and started again. At the end every acknowledged change has reached
the partner (on its own, or folded into a later update), and per person the numbers arrive in
order (a delivery in flight at a kill may arrive twice: at least once, never out of order).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from relay import config as config_module
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config

PEOPLE = 8


def relay_config(tmp_path: Path, partner_url: str) -> Path:
    return write_config(tmp_path / "relay.yaml", {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.05], "jitter": 0, "timeout": 5, "lease": 10,
                     "max_attempts": 1000, "batch_size": 16},
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": partner_url, "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                   "outgoing": ["create", "edit"]}],
    })


def change(person: int, number: int) -> dict[str, Any]:
    if number == 0:
        return event(f"p{person}-0", person, ["create"])
    return event(f"p{person}-{number}", person, ["edit"], first_name=f"v{number}")


def arrivals(events: list[dict[str, Any]]) -> dict[int, list[list[int]]]:
    """Per person, the deliveries the partner received, in order, each as the change numbers
    it carries (several when unsent updates were folded into one)."""
    seen: dict[int, list[list[int]]] = defaultdict(list)
    for e in events:
        numbers = [int(i.split("-")[1]) for i in e.get("merged") or [e["origin"]["event_id"]]]
        seen[int(e["origin"]["event_id"][1:].split("-")[0])].append(numbers)
    return seen


def received(deliveries: list[list[int]]) -> set[int]:
    return {n for numbers in deliveries for n in numbers}


def in_order(deliveries: list[list[int]]) -> bool:
    """Each delivery's changes in order, and no delivery carrying an older change than the
    one before it (the same delivery may come twice after a kill)."""
    return all(numbers == sorted(numbers) for numbers in deliveries) and all(
        later[-1] >= earlier[-1] for earlier, later in itertools.pairwise(deliveries))


async def run_crash_loop(tmp_path: Path, partner: Any, cycles: int,
                         rng: random.Random
                         ) -> tuple[dict[int, int], dict[int, list[list[int]]]]:
    """Returns, per person, the highest change number acknowledged and what arrived."""
    path = relay_config(tmp_path, partner.url)
    keys = generate_keys(config_module.load(path))
    acked = dict.fromkeys(range(1, PEOPLE + 1), -1)
    relay = RelayProcess(path)
    await relay.start()
    stop = asyncio.Event()

    async def site_outbox() -> None:
        while not stop.is_set():
            batch = [change(p, acked[p] + 1) for p in rng.sample(sorted(acked), 3)]
            try:
                status, _ = await post_signed(relay.url, "a", keys["a"], batch)
            except (aiohttp.ClientError, OSError):
                status = 0
            if status == 202:
                for e in batch:
                    person, number = e["id"][1:].split("-")
                    acked[int(person)] = int(number)
            else:
                await asyncio.sleep(0.02)  # the relay is down: the outbox keeps the batch

    sender = asyncio.create_task(site_outbox())
    try:
        for _ in range(cycles):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            await relay.kill()
            relay = RelayProcess(path)
            await relay.start()
        stop.set()
        await sender
        await partner.wait_for(lambda: all(
            acked[p] in received(arrivals(partner.events).get(p, [])) for p in acked),
            timeout=60)
    finally:
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        if relay.process is not None and relay.process.returncode is None:
            await relay.terminate()
    return acked, arrivals(partner.events)


async def test_nothing_acknowledged_is_lost_and_order_is_kept_across_kill_9(
        partner_factory: Any, tmp_path: Path) -> None:
    b = await partner_factory()

    acked, arrived = await run_crash_loop(tmp_path, b, cycles=5, rng=random.Random(9))

    lost = {p: sorted(set(range(acked[p] + 1)) - received(arrived.get(p, []))) for p in acked}
    assert {p: [] for p in acked} == lost
    assert {} == {p: deliveries for p, deliveries in arrived.items() if not in_order(deliveries)}
    assert sum(n + 1 for n in acked.values()) > 5 * PEOPLE  # the load really ran
