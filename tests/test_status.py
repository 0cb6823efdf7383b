"""Status: what is queued, dead-lettered and paused, and why, per site and link."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from relay import config as config_module
from relay import status
from relay.store import connect_sync
from tests.support import event, generate_keys, until


async def test_status_shows_a_paused_link_with_its_reason_and_what_waits(two_sites: Any) -> None:
    def gone(document: dict[str, Any]) -> web.Response:
        return web.json_response({}, status=410)
    relay, b = await two_sites(gone)
    await relay.post("a", [event("e1", 1, ["create"]), event("e2", 2, ["create"])])
    await relay.post("a", [event("e3", 1, ["edit"], first_name="X")])
    await until(lambda: relay.db("SELECT paused FROM link_states") == [(1,)])

    conn = connect_sync(relay.config.database_path)
    current = status.snapshot(conn, relay.config)
    conn.close()

    assert {"ready": 2, "waiting": 1} == current["sites"]["b"]["pending"]
    link = current["links"]["a-b"]
    assert "paused" == link["state"]
    assert link["paused_reason"].startswith("site 'b' answered 410 Gone")


def test_the_status_command_prints_it_without_any_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": "relay.sqlite3",
        "sites": [{"id": "a", "url": "https://a.example.test"},
                  {"id": "b", "url": "https://b.example.test"}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]}))
    keys = generate_keys(config_module.load(path))

    result = subprocess.run([sys.executable, "-m", "relay", "status", "--config", str(path)],
                            capture_output=True, text=True, check=False)

    assert 0 == result.returncode, result.stderr
    assert "a-b (a -> b, push): active" in result.stdout
    assert "dead letters 0" in result.stdout
    assert keys["a"].secret not in result.stdout
