"""Durable ingest: signed requests/s and p99 of the relay, next to a bare aiohttp handler.

Both servers run pinned to one core, wrk on the other, with the same pre-signed ~1 KB requests
(one event each, all distinct webhook-ids), 64 connections. The relay stores each event and its
routed delivery with a synchronous=FULL group commit before answering 202; its link is paused
so that this measures ingest alone.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3

from bench.common import (
    free_port,
    make_keys,
    pause_link,
    process,
    python,
    relay_config,
    run_wrk,
    workdir,
    wrk_script,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench.ingest needs wrk (apt-get install wrk)")
    work = workdir()
    port = free_port()
    config = relay_config(work, port, free_port())
    keys = make_keys(config)
    pause_link(work / "relay.sqlite3", "a-b")
    script = wrk_script(work, keys["a"], 400_000)
    bare_port = free_port()
    results: dict[str, list[dict[str, float]]] = {"bare": [], "relay": []}
    for _ in range(args.rounds):  # alternate, so drift on a noisy machine hits both alike
        with process([*python(), "-m", "bench.bare_server", str(bare_port)], port=bare_port):
            results["bare"].append(run_wrk(bare_port, script, args.seconds))
        with process([*python(), "-m", "relay", "serve", "--config", str(config)], port=port,
                     log=work / "relay.log"):
            results["relay"].append(run_wrk(port, script, args.seconds))
    with sqlite3.connect(work / "relay.sqlite3") as conn:
        stored = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    bare = max(results["bare"], key=lambda r: r["rps"])
    relay = max(results["relay"], key=lambda r: r["rps"])
    print(f"bare aiohttp handler : {bare['rps']:9.0f} req/s   p99 {bare['p99_ms']:6.1f} ms")
    print(f"relay, durable ingest: {relay['rps']:9.0f} req/s   p99 {relay['p99_ms']:6.1f} ms"
          f"   non-2xx {relay['non_2xx']:.0f}")
    print(f"ratio relay/bare     : {relay['rps'] / bare['rps']:.2f}  (target >= 0.80)")
    print(f"deliveries stored    : {stored}")
    # Plugins send many events per request; the same relay, 20 events a request:
    script20 = wrk_script(work, keys["a"], 20_000, per_request=20)
    with process([*python(), "-m", "relay", "serve", "--config", str(config)], port=port,
                 log=work / "relay.log"):
        batched = run_wrk(port, script20, args.seconds)
    print(f"relay, 20 events/request: {batched['rps'] * 20:9.0f} events/s   "
          f"p99 {batched['p99_ms']:6.1f} ms   non-2xx {batched['non_2xx']:.0f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
