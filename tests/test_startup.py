"""``userrelay serve`` refuses early: every start-up failure exits with one message naming the
file or setting, whatever was already open; the master key is never made behind the
operator's back; a database path that cannot be used is named by every command.

Each test runs the CLI as a child process, as an operator would (tests/cli_run.py fails on
a traceback or a hang).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import nacl.secret
import nacl.utils
import pytest
import yaml

from relay import config as config_module
from relay.keys.crypto import MasterKey, SiteKey
from tests.cli_run import userrelay
from tests.support import RelayProcess


def write(path: Path, **document: Any) -> Path:
    base: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"port": 0},
        "sites": [{"id": "shop", "url": "https://shop.example.com"},
                  {"id": "branch", "url": "https://branch.example.com"}],
        "links": [{"id": "shop-branch", "site": "shop", "remote": "branch",
                   "direction": "push"}],
    }
    path.write_text(yaml.safe_dump({**base, **document}))
    return path


def with_keys(tmp_path: Path) -> Path:
    config = write(tmp_path / "relay.yaml")
    assert 0 == userrelay("keys", "generate", "shop", "--config", config).code
    return config


@pytest.mark.parametrize("damage", ["garbage", "empty", "a folder", "deleted"])
def test_serve_with_a_broken_master_key_exits_at_once_naming_the_file(
        tmp_path: Path, damage: str) -> None:
    config = with_keys(tmp_path)
    master = tmp_path / "var" / "master.key"
    if damage == "garbage":
        master.write_text("not a key at all\n")
    elif damage == "empty":
        master.write_text("")
    else:
        master.unlink()
        if damage == "a folder":
            master.mkdir()

    result = userrelay("serve", "--config", config)

    assert 0 != result.code
    assert str(master) in result.err
    assert "relay_started" not in result.err
    assert (damage == "a folder") == master.is_dir()  # never replaced by a new key
    assert (damage != "deleted") or not master.exists()


def test_a_deleted_master_key_is_not_made_again_by_any_command(tmp_path: Path) -> None:
    config = with_keys(tmp_path)
    master = tmp_path / "var" / "master.key"
    master.unlink()

    generate = userrelay("keys", "generate", "branch", "--config", config)
    serve = userrelay("serve", "--config", config)

    assert not master.exists()
    for result in (generate, serve):
        assert 0 != result.code
        assert f"the master key file {master} does not exist" in result.err or \
            f"master_key_file ({master}): the file does not exist" in result.err
        assert "userrelay init --new-master-key --config" in result.err


def test_the_first_key_makes_the_master_key_and_says_where(tmp_path: Path) -> None:
    config = write(tmp_path / "relay.yaml")

    result = userrelay("keys", "generate", "shop", "--config", config)

    master = tmp_path / "var" / "master.key"
    assert 0 == result.code, result.err
    assert f"Made the master key {master} (mode 0600)" in result.out
    assert 0o600 == master.stat().st_mode & 0o777


def test_init_makes_the_master_key_once_and_new_master_key_starts_over(
        tmp_path: Path) -> None:
    config = write(tmp_path / "relay.yaml")
    master = tmp_path / "var" / "master.key"

    first = userrelay("init", "--config", config)
    again = userrelay("init", "--config", config)
    userrelay("keys", "generate", "shop", "--config", config)
    master.unlink()
    lost = userrelay("serve", "--config", config)
    over = userrelay("init", "--new-master-key", "--config", config)
    after = userrelay("check-config", "--config", config)

    assert f"Made the master key {master}" in first.out
    assert "is there already; nothing to do" in again.out
    assert 0 != lost.code
    assert 0 == over.code, over.err
    assert f"userrelay keys generate shop --config {config}" in over.out
    assert 0 == after.code, after.err


def test_a_master_key_that_is_not_the_one_the_keys_were_sealed_with_is_refused(
        tmp_path: Path) -> None:
    config = with_keys(tmp_path)
    master = tmp_path / "var" / "master.key"
    master.write_bytes(base64.b64encode(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)))

    check = userrelay("check-config", config)
    serve = userrelay("serve", "--config", config)

    for result in (check, serve):
        assert 0 != result.code
        assert "does not open the keys of shop" in result.err


async def test_readyz_is_not_ready_while_a_sites_key_cannot_be_opened(tmp_path: Path) -> None:
    path = with_keys(tmp_path)
    config = config_module.load(path)
    relay = RelayProcess(path)
    await relay.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{relay.url}/readyz") as response:
                before = response.status
            # A key sealed under another master key, as a command run with another
            # master_key_file would store it.
            other = MasterKey(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))
            with sqlite3.connect(config.database_path) as conn:
                conn.execute("UPDATE site_keys SET sealed = ? WHERE site = 'shop'",
                             (other.seal(SiteKey.generate()),))
            marker = config.database_path.with_name(config.database_path.name +
                                                    ".keys-changed")
            marker.write_text("changed")
            os.utime(marker, ns=(1, 1))
            async with session.get(f"{relay.url}/readyz") as response:
                after, body = response.status, await response.json()
    finally:
        assert 0 == await relay.terminate()

    assert (200, 503) == (before, after)
    assert "the key of site 'shop' cannot be opened" in body["problems"]["keys"]


@pytest.mark.parametrize("where", ["a folder", "under a file", "not sqlite", "in /proc"])
@pytest.mark.parametrize("command", [
    ["serve"], ["status"], ["keys", "generate", "shop"], ["links", "list"],
    ["links", "start", "shop-branch"], ["links", "progress", "shop-branch"], ["dead", "list"],
    ["sites", "test", "shop"], ["drift", "shop-branch"], ["check-config"]])
def test_a_database_path_that_cannot_be_used_is_named_by_every_command(
        tmp_path: Path, where: str, command: list[str]) -> None:
    (tmp_path / "a-file").write_text("x")
    database = {"a folder": tmp_path, "under a file": tmp_path / "a-file" / "relay.sqlite3",
                "not sqlite": tmp_path / "a-file", "in /proc": Path("/proc/userrelay/x.db")
                }[where]
    config = write(tmp_path / "relay.yaml", database=str(database))

    result = userrelay(*command, "--config", config)

    assert 0 != result.code
    assert str(database) in result.err or str(database.parent) in result.err, result.err
    assert len(result.err.splitlines()) <= 4, result.err


def test_a_second_relay_on_the_same_database_names_the_first_ones_pid(tmp_path: Path) -> None:
    config = write(tmp_path / "relay.yaml")

    async def run() -> tuple[Any, int]:
        first = RelayProcess(config)
        await first.start()
        try:
            second = await asyncio.to_thread(userrelay, "serve", "--config", config)
        finally:
            assert 0 == await first.terminate()
        assert first.process is not None
        return second, first.process.pid

    second, pid = asyncio.run(run())

    assert 1 == second.code
    assert f"another relay (PID {pid}) is already running on the database" in second.err
    assert "the setting `database`" in second.err


def test_a_busy_port_names_its_holder_and_the_setting(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write(tmp_path / "relay.yaml", listen={"host": "127.0.0.1", "port": port})

        result = userrelay("serve", "--config", config)

    assert 1 == result.code
    assert f"cannot listen on 127.0.0.1:{port}" in result.err
    assert f"(held by PID {os.getpid()})" in result.err
    assert f"listen.port in {config}" in result.err


@pytest.mark.parametrize(("token", "expected"), [
    (None, "cannot read the admin token: No such file or directory"),
    ("short", "the admin token must be one line of at least 32"),
])
def test_check_config_refuses_the_admin_token_files_serve_refuses(
        tmp_path: Path, token: str | None, expected: str) -> None:
    if token is not None:
        (tmp_path / "admin.token").write_text(token)
    config = write(tmp_path / "relay.yaml", admin={"port": 0, "token_file": "admin.token"})

    check = userrelay("check-config", "--config", config)
    serve = userrelay("serve", "--config", config)

    for result in (check, serve):
        assert 2 == result.code
        assert expected in result.err


def test_a_busy_admin_port_ends_the_start_after_the_database_opened(
        tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write(tmp_path / "relay.yaml", admin={"port": port})

        result = userrelay("serve", "--config", config,
                           env={"USERRELAY_ADMIN_TOKEN": "t" * 40})

    assert 1 == result.code
    assert result.err.splitlines()[-1].startswith(
        f"userrelay: cannot listen on 127.0.0.1:{port} for the admin API")
