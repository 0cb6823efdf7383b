"""Unauthenticated floods against a real relay process: what they cost the sites.

1. ``/healthz`` answer times while N idle connections are open (default 2,000; the relay runs
   under ``--file-limit``, 1,024 as systemd's default would give it), next to the same with
   none open, in the same run.
2. The relay's RSS before, at the peak of, and after M unsigned bodies of 1 MB sent at once
   (default 600).

``python -m bench.flood [--idle 2000] [--bodies 600] [--file-limit 1024]``. Only loopback;
the relay is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from relay import config as config_module
from tests.support import RelayProcess, generate_keys, write_config


def config(folder: Path) -> Path:
    return write_config(folder / "relay.yaml", {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(folder / "relay.sqlite3"),
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": "http://127.0.0.1:10", "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}],
    })


async def health_times(session: aiohttp.ClientSession, url: str, count: int = 50
                       ) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(f"{url}/healthz") as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        times.append((time.perf_counter() - started) * 1000)
    return times


async def idle_flood(folder: Path, idle: int, file_limit: int) -> None:
    path = config(folder)
    generate_keys(config_module.load(path))
    relay = RelayProcess(path, file_limit=file_limit)
    await relay.start()
    writers = []
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            quiet = await health_times(session, relay.url)
        for _ in range(idle):
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writers.append(writer)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            flooded = await health_times(session, relay.url)
    finally:
        for writer in writers:
            writer.close()
        await relay.terminate()
    print(f"/healthz, no idle connections   : median {statistics.median(quiet):6.2f} ms, "
          f"max {max(quiet):6.2f} ms")
    print(f"/healthz, {idle} idle connections: median {statistics.median(flooded):6.2f} ms, "
          f"max {max(flooded):6.2f} ms  (relay file limit {file_limit})")


async def body_flood(folder: Path, bodies: int) -> None:
    relay = RelayProcess(config(folder))
    await relay.start()
    body = b"x" * 1_000_000
    statuses: dict[int, int] = {}
    peak = 0.0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await session.get(f"{relay.url}/healthz")
            before = relay.rss_mib()

            async def send() -> None:
                async with session.post(f"{relay.url}/v1/sites/a/events", data=body) as resp:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, relay.rss_mib())
                    await asyncio.sleep(0.02)
            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(send() for _ in range(bodies)))
            watcher.cancel()
        await asyncio.sleep(2)
        after = relay.rss_mib()
    finally:
        await relay.terminate()
    print(f"{bodies} unsigned 1 MB bodies at once: answers {statuses}; RSS {before:.0f} MiB "
          f"before, {peak:.0f} MiB at the peak, {after:.0f} MiB 2 s after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--bodies", type=int, default=600)
    parser.add_argument("--file-limit", type=int, default=1024)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + args.bodies + 256:  # this process holds the other ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + args.bodies + 1024),
                                                    hard))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "idle").mkdir()
        (Path(folder) / "bodies").mkdir()
        asyncio.run(idle_flood(Path(folder) / "idle", args.idle, args.file_limit))
        asyncio.run(body_flood(Path(folder) / "bodies", args.bodies))


if __name__ == "__main__":
    main()
