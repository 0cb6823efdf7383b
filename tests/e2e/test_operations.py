"""Operating a running relay between real WordPress sites: dead letters and the admin API."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.e2e.test_sync import arrives, create
from tests.e2e.world import World, user, wait_until
from tests.support import record, secret

pytestmark = pytest.mark.wordpress


def test_a_change_the_partner_refuses_is_dead_lettered_then_replayed(world: World) -> None:
    world.link("push")
    role = f"e2e_{uuid.uuid4().hex[:6]}"
    world.a.php(f"add_role('{role}', 'Only on a', ['read' => true]);")
    login, email = f"dead{role}", f"dead{role}@example.test"
    uid = create(world.a, login, email)
    arrives(world.b, email)

    world.a.php(f"(new WP_User({uid}))->set_role('{role}');")  # b has no such role

    dead = wait_until("the refused change is dead-lettered", lambda: [
        d for d in json.loads(world.admin("dead", "list", "--json"))["dead_letters"]
        if role in (d["last_error"] or "")])
    assert [("a", "b", 422)] == [(d["source"], d["target"], d["last_status"]) for d in dead]
    assert user(world.b, email)["roles"] == ["subscriber"]  # type: ignore[index]

    world.b.php(f"add_role('{role}', 'Now on b too', ['read' => true]);")
    world.admin("dead", "replay", "--target", "b")

    arrives(world.b, email, lambda u: u["roles"] == [role], "the replayed role change")
    assert [] == [d for d in json.loads(world.admin("dead", "list", "--json"))["dead_letters"]
                  if role in (d["last_error"] or "")]


def call(base: str, token: str, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{base}{path}", method=method, data=b"{}" if
                                     method == "POST" else None, headers={
                                         "Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    record("e2e-admin-api", f"{method} {path} -> {status}\n{text}")
    return status, json.loads(text)


def test_the_admin_api_tests_sites_and_starts_and_pauses_the_link(world: World) -> None:
    token = secret(secrets.token_urlsafe(32))
    base = world.relay.enable_admin(token)
    try:
        world.link("push")

        tested = call(base, token, "POST", "/admin/sites/b/test")
        paused = call(base, token, "POST", "/admin/links/a-b/pause")
        login, email = f"adm{uuid.uuid4().hex[:6]}", f"adm{uuid.uuid4().hex[:6]}@example.test"
        create(world.a, login, email)
        while_paused = wait_until(
            "the status shows the new user's change queued behind the paused link",
            lambda: (answer := call(base, token, "GET", "/admin/status"))[1]["sites"]["b"]
            ["pending"]["ready"] >= 1 and answer)
        assert user(world.b, email) is None
        started = call(base, token, "POST", "/admin/links/a-b/start")
        arrives(world.b, email)
        refused = call(base, "not-the-token", "GET", "/admin/status")
    finally:
        world.relay.admin_settings = None
        world.link("push")

    assert (200, True) == (tested[0], tested[1]["passed"])
    assert 200 == paused[0] and 200 == started[0]
    link = while_paused[1]["links"]["a-b"]
    assert "paused" == link["state"]
    assert 401 == refused[0]
