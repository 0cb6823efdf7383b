"""Under systemd: the real daemon tells its notify socket when it is ready, reloading, alive and
stopping (sd_notify(3)), as ``Type=notify`` with a watchdog expects."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from relay.daemon import systemd
from relay.keys.keystore import KeyStore
from tests.support import RelayProcess, write_config


class NotifySocket:
    """The service manager's end: a unix datagram socket that collects what the relay says.

    On READY=1 it connects to the address named in the same message's STATUS at once, so a
    relay that said it was ready before it listened is caught.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.messages: list[dict[str, str]] = []
        self.answered_at_ready: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.setblocking(False)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NotifySocket:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self._sock.close()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 4096)
            message = dict(line.split("=", 1) for line in data.decode().splitlines())
            if message.get("READY") == "1":
                self.answered_at_ready.append(await _first_line(message["STATUS"]))
            self.messages.append(message)

    def sent(self, field: str) -> list[dict[str, str]]:
        return [m for m in self.messages if field in m]

    async def wait_for(self, field: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent(field)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {field} within {timeout}s: {self.messages}")
            await asyncio.sleep(0.01)


async def _first_line(status: str) -> str:
    """The status line of GET /readyz at the address in ``status``, asked right now."""
    match = re.search(r"Listening on ([\d.]+):(\d+)", status)
    assert match, status
    reader, writer = await asyncio.open_connection(match[1], int(match[2]))
    writer.write(b"GET /readyz HTTP/1.0\r\n\r\n")
    line = await reader.readline()
    writer.close()
    return line.decode().strip()


def relay_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "relay.yaml", {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": "http://127.0.0.1:19", "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}],
    })


@pytest.fixture
async def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[NotifySocket]:
    """An abstract-namespace socket, as systemd hands out, named in the relay's environment."""
    address = f"@userrelay-test-{os.getpid()}-{tmp_path.name}"
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    async with NotifySocket(address) as sock:
        yield sock


async def test_ready_is_sent_once_the_relay_answers_and_stopping_on_sigterm(
        notify_socket: NotifySocket, tmp_path: Path) -> None:
    relay = RelayProcess(relay_config(tmp_path))
    await relay.start()
    await notify_socket.wait_for("READY")

    code = await relay.terminate()

    assert ["HTTP/1.0 200 OK"] == notify_socket.answered_at_ready
    assert "Starting" == notify_socket.messages[0]["STATUS"]
    ready = notify_socket.sent("READY")[0]
    assert f"Listening on 127.0.0.1:{relay.port}; 2 sites, 1 links" == ready["STATUS"]
    assert 0 == code
    assert 1 == len(notify_socket.sent("STOPPING"))
    assert notify_socket.messages.index(notify_socket.sent("STOPPING")[0]) > \
        notify_socket.messages.index(ready)
    assert not notify_socket.sent("WATCHDOG")  # not asked for


async def test_a_reload_is_announced_with_its_monotonic_time_then_ready_again(
        notify_socket: NotifySocket, tmp_path: Path) -> None:
    relay = RelayProcess(relay_config(tmp_path))
    await relay.start()
    await notify_socket.wait_for("READY")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    assert relay.process is not None
    relay.process.send_signal(signal.SIGHUP)
    await notify_socket.wait_for("READY", count=2)
    await relay.terminate()

    reloading = notify_socket.sent("RELOADING")
    assert 1 == len(reloading)
    assert before <= int(reloading[0]["MONOTONIC_USEC"]) <= \
        time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert ["HTTP/1.0 200 OK"] * 2 == notify_socket.answered_at_ready


async def test_the_watchdog_is_pinged_while_the_relay_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "notify.sock")  # a socket in the file system works as well
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    async with NotifySocket(address) as notify_socket:
        relay = RelayProcess(relay_config(tmp_path))
        await relay.start()
        try:
            await notify_socket.wait_for("WATCHDOG", count=3, timeout=10)
        finally:
            assert 0 == await relay.terminate()

    pings = notify_socket.sent("WATCHDOG")
    assert {"1"} == {p["WATCHDOG"] for p in pings}
    assert notify_socket.messages.index(pings[0]) > \
        notify_socket.messages.index(notify_socket.sent("READY")[0])


async def test_the_watchdog_is_not_pinged_while_something_is_wrong(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    answers = [{"couriers": "not running: courier-b"}] * 3 + [{}]

    async def alive() -> dict[str, Any]:
        return answers.pop(0) if answers else {}
    async with NotifySocket(address) as notify_socket:
        task = asyncio.create_task(systemd.watchdog(0.01, alive))
        await notify_socket.wait_for("WATCHDOG")
        task.cancel()

    assert not answers  # the first ping came only after the fourth check found all well


def test_without_a_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process

    assert (False, None) == (systemd.notify("READY=1"), systemd.watchdog_interval())


def test_the_master_key_is_taken_from_the_service_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = config_module.load(relay_config(tmp_path))
    outside = tmp_path / "etc" / "master.key"  # what LoadCredential= copies in
    keys = KeyStore(config.database_path, outside)
    key = keys.generate("a")
    keys.close()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(outside, credentials / "master.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    service_keys = KeyStore(config.database_path, config.master_key_path)
    try:
        assert key == service_keys.get("a")
    finally:
        service_keys.close()
    assert credentials / "master.key" == config.master_key_path
    assert not (tmp_path / "master.key").exists()  # no second key made beside the database
