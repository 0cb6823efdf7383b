"""Sites and links listed and removed through the admin API, on a real relay process whose
configuration file it edits (``userrelay sites list|remove``, ``links remove``)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay import config as config_module
from tests.support import AdminClient, RelayProcess, event, generate_keys, post_signed


@pytest.fixture
async def relay_with_admin(tmp_path: Path, admin_token: str) -> Any:
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin_token)
    token_file.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin_port = s.getsockname()[1]
    path = tmp_path / "relay.yaml"
    path.write_text(
        "# kept: a comment the removals must not lose\n"
        "listen: {host: 127.0.0.1, port: 0}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}, token_file: {token_file}}}\n"
        f"database: {tmp_path / 'relay.sqlite3'}\n"
        "delivery: {retry_schedule: [30], jitter: 0}\n"
        "sites:\n"
        "  - {id: a, url: 'http://127.0.0.1:9', allow_http: true}\n"
        "  - {id: b, url: 'http://127.0.0.1:10', allow_http: true}  # b's comment\n"
        "links:\n"
        "  - {id: a-b, site: a, remote: b, direction: push}\n")
    keys = generate_keys(config_module.load(path))
    process = RelayProcess(path)
    await process.start()
    await process.logged("admin_started")
    try:
        yield process, AdminClient(f"http://127.0.0.1:{admin_port}", admin_token), path, keys
    finally:
        if process.process is not None and process.process.returncode is None:
            await process.terminate()


def states(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path.with_name("relay.sqlite3")) as conn:
        return conn.execute("SELECT state, COALESCE(last_error, '') FROM deliveries").fetchall()


async def test_sites_are_listed_without_their_keys(relay_with_admin: Any) -> None:
    _, api, _, keys = relay_with_admin

    status, answer = await api.call("GET", "/admin/sites")

    assert 200 == status
    assert [("a", True, ["a-b"]), ("b", True, ["a-b"])] == [
        (s["id"], s["key"], s["links"]) for s in answer["sites"]]
    assert keys["a"].secret not in str(answer)


async def test_a_link_removal_says_what_is_queued_and_does_it_only_when_confirmed(
        relay_with_admin: Any) -> None:
    process, api, path, keys = relay_with_admin
    status, _ = await post_signed(process.url, "a", keys["a"], [event("e1", 1, ["create"])])
    assert 202 == status

    status, preview = await api.call("POST", "/admin/links/a-b/remove", {})
    assert (200, False) == (status, preview["removed"])
    assert 1 == sum(preview["queued"].values())
    assert "a-b" in path.read_text()

    status, done = await api.call("POST", "/admin/links/a-b/remove", {"confirm": True})

    assert (200, True, 1) == (status, done["removed"], done["dead_lettered"])
    assert [("dead", "link 'a-b' was removed from the configuration")] == states(path)
    text = path.read_text()
    assert "a-b" not in text and "# kept: a comment" in text and "# b's comment" in text


async def test_a_site_removal_takes_its_links_and_its_key(relay_with_admin: Any) -> None:
    process, api, path, keys = relay_with_admin

    status, done = await api.call("POST", "/admin/sites/b/remove", {"confirm": True})

    assert (200, True, ["a-b"]) == (status, done["removed"], done["links"])
    config = config_module.load(path)
    assert (["a"], []) == (list(config.sites), list(config.links))
    with sqlite3.connect(path.with_name("relay.sqlite3")) as conn:
        assert [("a",)] == conn.execute("SELECT site FROM site_keys").fetchall()


async def test_an_unknown_site_or_a_bad_confirmation_is_refused(relay_with_admin: Any) -> None:
    _, api, _, _ = relay_with_admin

    unknown, _ = await api.call("POST", "/admin/sites/zz/remove", {"confirm": True})
    bad, answer = await api.call("POST", "/admin/links/a-b/remove", {"confirm": "yes"})

    assert (404, 400) == (unknown, bad)
    assert "confirm: got 'yes'; expected true or false" == answer["error"]
