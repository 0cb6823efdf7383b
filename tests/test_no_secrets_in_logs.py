"""Keys, the admin token and password hashes never appear in logs, status output or errors.

The whole suite is held to this at the end of the session (tests/conftest.py scans all relay
logs and recorded outputs for every secret the tests made). Here the paths most likely to leak
are walked on purpose, and the check itself is shown to catch a leak.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from tests import support
from tests.relay_settings import config_file, settings, site
from tests.support import event, leaks, run_cli, secret, until


async def test_no_secret_reaches_the_logs_the_status_or_an_error(
        admin_relay: Any, tmp_path: Path) -> None:
    def echoing(document: dict[str, Any]) -> web.Response:
        # A careless site quoting what it was sent, password hash included, in its refusal.
        return web.json_response({"results": [
            {"id": e["id"], "status": 422, "error": f"cannot apply {json.dumps(e['user'])}"}
            for e in document["events"]]})
    relay, b, api = await admin_relay(echoing)
    password_hash = "$P$B" + secrets.token_hex(14)
    outputs: list[str] = []

    status, answer = await relay.post("a", [event("e0", 1, ["create"])], key=relay.keys["c"])
    outputs.append(json.dumps(answer))
    await relay.post("a", [event("e1", 1, ["create", "password"],
                                 password_hash=password_hash)])
    await until(lambda: relay.db("SELECT state FROM deliveries") == [("dead",)])
    for authorization in (None, f"Bearer {api.token[:-1]}", f"Bearer {api.token}\t"):
        outputs.append(str(await api.call("GET", "/admin/status", authorization=authorization)))
    outputs.append(json.dumps(await api.call("GET", "/admin/status")))
    outputs.append(json.dumps(await api.call("GET", "/admin/dead")))
    path = str(config_file(relay.config, tmp_path / "relay.yaml"))
    for command in (["status"], ["status", "--json"], ["dead", "list"],
                    ["dead", "list", "--json"]):
        result = run_cli(*command, "--config", path)
        outputs.append(result.stdout + result.stderr)
    weak = secret("weak-" + secrets.token_hex(4))
    (tmp_path / "weak.token").write_text(weak)
    weak_config = tmp_path / "weak.yaml"
    weak_config.write_text(f"database: {tmp_path / 'other.sqlite3'}\nlisten: {{port: 0}}\n"
                           f"admin: {{token_file: weak.token, port: 0}}\n")
    refused = run_cli("serve", "--config", str(weak_config), check=False)
    outputs.append(refused.stdout + refused.stderr)
    assert support.OUTPUT_DIR is not None
    logged = (support.OUTPUT_DIR / "relay-in-process.log").read_text()

    assert 401 == status
    assert "cannot apply" in outputs[-2]  # the site's refusal is shown, its secrets masked
    assert 2 == refused.returncode
    assert f"admin.token_file ({tmp_path / 'weak.token'}): the admin token must be" in \
        refused.stderr
    assert "dead_lettered" in logged and "admin_unauthorized" in logged
    everything = "\n".join([*outputs, logged])
    assert "**********" in everything
    for value in (password_hash, api.token, weak, *(k.secret for k in relay.keys.values()),
                  *(k.secret.removeprefix("whsec_") for k in relay.keys.values())):
        assert value not in everything


def test_the_check_finds_a_secret_written_anywhere_in_the_output(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    (tmp_path / "relay-process.log").write_text("started\n")
    (tmp_path / "admin-api.log").write_text(f'GET /admin/status -> 200\n{{"x": "{token}"}}\n')

    found = leaks(tmp_path, {token, "never-written-anywhere"})

    assert [f"admin-api.log:2: a secret starting {token[:8]!r}…"] == found


def test_every_key_the_tests_make_is_registered_as_a_secret(tmp_path: Path) -> None:
    config = settings(tmp_path, [site("a", "http://127.0.0.1:9")], [])

    keys = support.generate_keys(config, start_links=False)
    password_hash = event("e1", 1, ["password"])["user"]["password_hash"]

    assert {keys["a"].secret, keys["a"].secret.removeprefix("whsec_")} <= support.SECRETS
    assert password_hash in support.SECRETS
