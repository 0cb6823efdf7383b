"""The longer fuzz run: many requests with bad input at every route of a real relay process.

    python -m bench.fuzz [--requests 100000] [--seed 1]

Reuses the fuzz suite's relay (tests/test_fuzz.py) and its nasty values, but draws requests
with a seeded ``random`` rather than Hypothesis (no shrinking: it counts). Sends signed event
batches with one field replaced, unsigned or badly signed bodies, and admin API calls, 8 at a
time, and reports how many of each got which status. The target: no 5xx at all, and no
unsigned request accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support import event, post_signed
from tests.test_fuzz import NASTY, Fuzzed

USER_FIELDS = ["id", "login", "email", "display_name", "url", "roles", "meta", "meta_deleted",
               "password_hash", "first_name"]
ADMIN = [("GET", "/admin/status"), ("GET", "/admin/dead"), ("POST", "/admin/dead/replay"),
         ("POST", "/admin/dead/purge"), ("POST", "/admin/links/a-b/pause"),
         ("POST", "/admin/sites/zz/rotate-key")]


def nasty(rng: random.Random) -> Any:
    return rng.choice([*NASTY, rng.randint(-2 ** 70, 2 ** 70), rng.random() * 1e+20, "ok", [], {}])


def signed_batch(rng: random.Random, n: int) -> list[dict[str, Any]]:
    batch = []
    for i in range(rng.randint(1, 3)):
        e = event(f"f{n}-{i}", rng.randint(1, 200), rng.choice([["create"], ["edit"],
                                                                  ["metadata"], ["delete"]]))
        if rng.random() < 0.3:
            e[rng.choice(["id", "occurred_at", "actions", "user"])] = nasty(rng)
        elif rng.random() < 0.8:
            e["user"][rng.choice(USER_FIELDS)] = nasty(rng)
        batch.append(e)
    return batch


async def one(fuzz: Fuzzed, rng: random.Random, n: int, tally: Counter[str]) -> None:
    kind = rng.choice(["signed", "signed", "unsigned", "admin"])
    if kind == "signed":
        status, _ = await post_signed(fuzz.relay.url, "a", fuzz.keys["a"], signed_batch(rng, n))
    elif kind == "unsigned":
        body = json.dumps({"events": signed_batch(rng, n)}).encode() if rng.random() < 0.5 \
            else rng.randbytes(rng.randint(0, 400))
        # Well-formed headers (so the signature itself is what is checked), a forged signature.
        headers = {"webhook-id": str(nasty(rng))[:60] or "msg_x",
                   "webhook-timestamp": str(int(time.time())), "userrelay-protocol": "2",
                   "webhook-signature": "v1," + rng.randbytes(32).hex()}
        status = await fuzz.request("POST", f"{fuzz.relay.url}/v1/sites/a/events",
                                    data=body, headers=headers)
        if status == 202:
            tally["unsigned accepted"] += 1
    else:
        method, path = rng.choice(ADMIN)
        query = {rng.choice(["ids", "limit", "since", "target"]): str(nasty(rng))[:80]
                 .encode("utf-8", "replace").decode()}
        text = json.dumps({rng.choice(["ids", "since", "all", "reason", "grace"]): nasty(rng)})
        status = await fuzz.request(method, f"{fuzz.admin_url}{path}", params=query,
                                    data=text.encode(),
                                    headers={"Authorization": f"Bearer {fuzz.token}"})
    tally[f"{kind} {status}"] += 1
    if status >= 500:
        tally["5xx"] += 1


async def run(fuzz: Fuzzed, requests: int, seed: int) -> Counter[str]:
    rng, tally = random.Random(seed), Counter[str]()
    slots = asyncio.Semaphore(8)

    async def guarded(n: int) -> None:
        async with slots:
            await one(fuzz, rng, n, tally)
    await asyncio.gather(*(guarded(n) for n in range(requests)))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fuzz = Fuzzed(Path(folder))
        try:
            started = time.monotonic()
            tally = asyncio.run_coroutine_threadsafe(run(fuzz, args.requests, args.seed),
                                                     fuzz.loop).result()
            took = time.monotonic() - started
        finally:
            fuzz.close()
    print(f"{args.requests} requests in {took:.0f} s; 5xx: {tally['5xx']}; unsigned accepted: "
          f"{tally['unsigned accepted']}")
    for key, count in sorted(tally.items()):
        print(f"  {key}: {count}")


if __name__ == "__main__":
    main()
