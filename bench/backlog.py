"""A growing backlog: the relay's peak memory and the claim time at 10k, 100k and 1M pending.

The backlog is queued through the relay's own ingest code (one person per event, so every
delivery is the head of its line and claimable). At each size: the median time of claiming a
batch of 100 (then giving it back), measured on the database itself; and the peak RSS of a relay
process that serves and delivers from that backlog to a fast partner for a few seconds.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import time

from bench.common import (
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
    rss_peak_mib,
    unpause_link,
    workdir,
)
from relay.db import queue
from relay.db.store import connect_sync


def claim_time(database: object, repeats: int = 30) -> float:
    """Median microseconds to claim a batch of 100 due deliveries."""
    conn = connect_sync(database)  # type: ignore[arg-type]
    times = []
    try:
        for _ in range(repeats):
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            start = time.perf_counter()
            claimed = queue.claim(conn, "b", ["a-b"], 100, now, 60)
            times.append(time.perf_counter() - start)
            assert len(claimed) == 100, len(claimed)
            conn.execute("ROLLBACK")  # leave the backlog as it was
    finally:
        conn.close()
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    work = workdir()
    port, partner_port = free_port(), free_port()
    config = relay_config(work, port, partner_port)
    keys = make_keys(config)
    database = work / "relay.sqlite3"
    pause_link(database, "a-b")
    queued = 0
    print(f"{'pending':>9}  {'claim 100':>10}  {'relay peak RSS':>14}  delivered in run")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        more = size - pending(database)  # the previous run delivered some: top up to size
        fill(database, config, queued + 1, queued + more)
        queued += more
        backlog = pending(database)
        claim_us = claim_time(database)
        unpause_link(database, "a-b")
        with partner(work, partner_port, keys["b"]), process(
                [*python(), "-m", "relay", "serve", "--config", str(config)], port=port,
                log=work / "relay.log") as relay:
            time.sleep(args.seconds)  # serving and delivering from the backlog meanwhile
            peak = rss_peak_mib(relay.pid)
            delivered = partner_count(partner_port)
        pause_link(database, "a-b")
        rows.append((backlog, claim_us, peak))
        print(f"{backlog:9d}  {claim_us:8.0f}us  {peak:11.1f} MiB  {delivered}")
    with sqlite3.connect(database) as conn:
        size_mib = conn.execute("PRAGMA page_count").fetchone()[0] * 4096 / 2**20
    first, last = rows[0], rows[-1]
    print(f"claim time {last[0]} vs {first[0]} pending: {last[1] / first[1]:.2f}x; "
          f"peak RSS: {last[2] / first[2]:.2f}x; database {size_mib:.0f} MiB")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
