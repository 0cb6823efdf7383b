"""Faults of the machine under a running relay: a full disk, a read-only file system, a
database locked by another process. ``/readyz`` names each, and the relay recovers by itself
once it is gone. The small disks are real tmpfs mounts (root only, as the suite runs in CI).
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.relay_settings import settings, site
from tests.support import event, until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system of its own (tmpfs), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the file system to its last byte; returns the filler file."""
    filler = disk / "filler"
    # Unbuffered: a buffered file would keep the last partial chunk and fail again on close.
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


async def relay_on(folder: Path, partner_factory: Any, relay_factory: Any) -> tuple[Any, Any]:
    b = await partner_factory()
    config = settings(folder, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                      [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                        "outgoing": ["create", "edit"]}])
    relay = await relay_factory(config)
    b.key, b.site_id, b.relay_url = relay.keys["b"], "b", relay.url
    return relay, b


async def readiness(relay: Any) -> tuple[int, Any]:
    resp = await relay.client.get("/readyz")
    return resp.status, await resp.json()


async def wait_ready(relay: Any, expected: int) -> dict[str, Any]:
    answers: list[tuple[int, Any]] = []

    async def check() -> bool:
        answers.append(await readiness(relay))
        return answers[-1][0] == expected
    for _ in range(200):
        if await check():
            return answers[-1][1]  # type: ignore[no-any-return]
    raise AssertionError(f"/readyz never answered {expected}: {answers[-1]}")


async def test_readyz_says_the_disk_is_full_and_recovers_when_space_returns(
        small_disk: Path, partner_factory: Any, relay_factory: Any) -> None:
    relay, b = await relay_on(small_disk, partner_factory, relay_factory)
    filler = fill(small_disk)

    full = await wait_ready(relay, 503)
    filler.unlink()
    await wait_ready(relay, 200)
    status, _ = await relay.post("a", [event("e1", 1, ["create"])])

    assert "is full" in full["problems"]["database"], full
    assert 202 == status
    await b.wait_for(lambda: len(b.events) == 1)


async def test_readyz_says_the_file_system_is_read_only_until_it_is_writable_again(
        small_disk: Path, partner_factory: Any, relay_factory: Any) -> None:
    relay, _ = await relay_on(small_disk, partner_factory, relay_factory)
    # A file system with the database's files open cannot be remounted read-only, so a
    # read-only view of it is mounted over it, as an administrator's mistake would.
    await asyncio.to_thread(run, "mount", "--bind", str(small_disk), str(small_disk))
    await asyncio.to_thread(run, "mount", "-o", "remount,bind,ro", str(small_disk))
    try:
        read_only = await wait_ready(relay, 503)
    finally:
        await asyncio.to_thread(run, "umount", str(small_disk))

    assert "read-only" in read_only["problems"]["database"], read_only
    await wait_ready(relay, 200)


async def test_readyz_says_the_database_is_locked_by_another_writer_until_it_lets_go(
        two_sites: Any) -> None:
    relay, _ = await two_sites()
    other = sqlite3.connect(relay.config.database_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        locked = await wait_ready(relay, 503)
    finally:
        other.execute("COMMIT")
        other.close()

    assert "locked by another writer" in locked["problems"]["database"], locked
    await wait_ready(relay, 200)
    status, _ = await relay.post("a", [event("e1", 1, ["create"])])
    assert 202 == status
    await until(lambda: relay.db("SELECT count(*) FROM deliveries") == [(1,)])
