"""Delivery: forwarded events/s with and without batching, and the sustained rate of one process.

1. A backlog of events is queued through the relay's own ingest code, then the relay (one core)
   drains it to a fast local partner (the other core): once with one event per request (the
   baseline), once with batches. Same run, same backlog size.
2. Sustained: one relay process accepts a fixed offered rate of signed one-event requests and
   delivers them at once; for each rate, whether the backlog stayed flat. The load generator
   (bench/load.py) shares the other core with the partner and tops out near 3,000 requests/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time

from bench.common import (
    LOAD_CORE,
    fill,
    free_port,
    make_keys,
    partner,
    partner_count,
    pause_link,
    pending,
    process,
    python,
    relay_config,
    unpause_link,
    workdir,
)


def drain(events: int, batch_size: int) -> float:
    """Events/s forwarded from a backlog of ``events``."""
    work = workdir()
    port, partner_port = free_port(), free_port()
    config = relay_config(work, port, partner_port, batch_size=batch_size, in_flight=4)
    keys = make_keys(config)
    database = work / "relay.sqlite3"
    pause_link(database, "a-b")
    fill(database, config, 1, events)
    unpause_link(database, "a-b")
    with partner(work, partner_port, keys["b"]):
        start = time.monotonic()
        with process([*python(), "-m", "relay", "serve", "--config", str(config)], port=port,
                     log=work / "relay.log"):
            while partner_count(partner_port) < events:
                time.sleep(0.05)
            elapsed = time.monotonic() - start
    shutil.rmtree(work)
    return events / elapsed


def sustained(rates: list[int], seconds: int) -> list[dict[str, float]]:
    work = workdir()
    port, partner_port = free_port(), free_port()
    config = relay_config(work, port, partner_port)
    keys = make_keys(config)
    keyfile = work / "a.key"
    keyfile.write_text(keys["a"].secret)
    database = work / "relay.sqlite3"
    rows = []
    first = 1
    with partner(work, partner_port, keys["b"]), process(
            [*python(), "-m", "relay", "serve", "--config", str(config)], port=port,
            log=work / "relay.log"):
        for rate in rates:
            before_pending, before_count = pending(database), partner_count(partner_port)
            out = subprocess.run(["taskset", "-c", LOAD_CORE, *python(), "-m", "bench.load",
                                  f"http://127.0.0.1:{port}", "a", str(keyfile), str(rate),
                                  str(seconds), str(first)],
                                 capture_output=True, text=True, check=True).stdout
            sent = json.loads(out)
            first += sent["sent"]
            after_pending, after_count = pending(database), partner_count(partner_port)
            rows.append({"offered": rate, "accepted": sent["accepted"] / sent["seconds"],
                         "refused": sent["refused"] + sent["errors"],
                         "delivered": (after_count - before_count) / sent["seconds"],
                         "backlog_growth": after_pending - before_pending})
            while pending(database) > 0:  # drain before the next rate
                time.sleep(0.1)
    shutil.rmtree(work)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rates", default="1000,2000,3000")
    args = parser.parse_args()
    single = drain(args.events, batch_size=1)
    batched = drain(args.events, batch_size=100)
    print(f"forwarded, one event per request : {single:8.0f} events/s")
    print(f"forwarded, batches of up to 100  : {batched:8.0f} events/s   "
          f"({batched / single:.1f}x)")
    print("sustained, one process accepting and delivering (one event per request):")
    for row in sustained([int(r) for r in args.rates.split(",")], args.seconds):
        flat = "flat" if row["backlog_growth"] <= row["offered"] * 0.05 else "GROWING"
        print(f"  offered {row['offered']:6.0f}/s  accepted {row['accepted']:6.0f}/s  "
              f"delivered {row['delivered']:6.0f}/s  backlog {row['backlog_growth']:+6.0f} "
              f"({flat})  refused {row['refused']:.0f}")


if __name__ == "__main__":
    main()
