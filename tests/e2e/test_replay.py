"""Captured requests, on real WordPress: a signed request authorizes one direction, one
operation on one site, once (docs/security.md).

Site a's own plugin talks to the relay through a recording proxy, so the requests replayed here
are exactly what the plugin signed; the relay's requests are made by the relay's own client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from relay.keys.crypto import SiteKey
from tests.e2e.lab_site import Site
from tests.e2e.world import World, post_to_plugin, send, signed_for_plugin, user, wait_until

pytestmark = pytest.mark.wordpress

PLUGIN_OPERATIONS = ("events", "ping", "users", "digests", "snapshots", "nudge")


class RecordingProxy:
    """Forwards every request to ``upstream`` and keeps a copy of it (method, path, headers,
    body), as someone watching the traffic would."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[dict[str, Any]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                proxy.seen.append({"method": self.command, "path": self.path,
                                   "headers": headers, "body": body})
                status, answer = send(proxy.upstream + self.path, body or None, headers,
                                      self.command)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def watched_a(world: World) -> Iterator[RecordingProxy]:
    """Site a reports to the relay through a recording proxy."""
    with RecordingProxy(world.relay.url) as proxy:
        world.a.set_constants({"USERRELAY_URL": proxy.url})
        try:
            yield proxy
        finally:
            world.a.set_constants({"USERRELAY_URL": world.relay.url})


def key_of(site: Site) -> SiteKey:
    return SiteKey(str(site.constants["USERRELAY_KEY"]))


def captured_report(world: World, proxy: RecordingProxy) -> dict[str, Any]:
    """A report of site a's plugin to the relay, as it crossed the wire."""
    world.link("push")
    login = f"captured{uuid.uuid4().hex[:8]}"
    world.a.php(f"wp_insert_user(['user_login' => '{login}', 'user_email' => "
                f"'{login}@example.test', 'user_pass' => 'Captured-Pass-1']);")

    def reported() -> list[dict[str, Any]]:
        return [r for r in proxy.seen
                if r["path"].endswith("/events") and login.encode() in r["body"]]
    return wait_until("site a reports the new user", reported)[0]  # type: ignore[no-any-return]


def captured_ping(world: World, proxy: RecordingProxy) -> dict[str, Any]:
    """The signed ping site a's plugin sends the relay (its Test Connection), as it crossed the
    wire: protocol 1 signed it over an empty body, which made it a key to every read."""
    world.a.php("(new UserRelay_Relay_Client(new UserRelay_Settings()))->probe();")
    return next(r for r in proxy.seen if r["path"].endswith("/ping"))


@pytest.mark.parametrize("captured", ["report", "ping"])
def test_a_captured_request_of_a_site_replayed_to_every_plugin_route_is_refused(
        world: World, watched_a: RecordingProxy, captured: str) -> None:
    request = (captured_report if captured == "report" else captured_ping)(world, watched_a)
    headers, body = request["headers"], request["body"] or None

    answers = {}
    for site in (world.a, world.b):
        for operation in PLUGIN_OPERATIONS:
            url = f"{site.url}/wp-json/userrelay/v1/{operation}"
            answers[f"POST {site.name} {operation}"] = send(url, body, headers)
        # The attack as it was made against protocol 1: the same headers on a read of users.
        for route in ("users?limit=1000", "digests?fields=meta:session_tokens,wp_capabilities",
                      "ping"):
            answers[f"GET {site.name} {route}"] = send(
                f"{site.url}/wp-json/userrelay/v1/{route}", None, headers, "GET")

    accepted = {name: status for name, (status, _) in answers.items() if status < 400}
    assert {} == accepted
    assert all(status in (400, 401) for status, _ in answers.values()), answers
    assert "$P$" not in json.dumps([answer for _, answer in answers.values()])
    assert "$wp$" not in json.dumps([answer for _, answer in answers.values()])


def test_a_captured_report_replayed_to_the_relays_other_routes_is_refused(
        world: World, watched_a: RecordingProxy) -> None:
    report = captured_report(world, watched_a)
    headers, body = report["headers"], report["body"]
    relay = world.relay.url
    world.quiet()
    before = world.relay.db("SELECT COUNT(*) FROM deliveries")

    as_ping = send(f"{relay}/v1/sites/a/ping", body, headers)
    as_b = send(f"{relay}/v1/sites/b/events", body, headers)
    again = send(f"{relay}/v1/sites/a/events", body, headers)

    assert 400 == as_ping[0] and "this route takes 'ping'" in as_ping[1]["error"]
    assert 401 == as_b[0]
    # Its own route: a second use of the webhook-id gets the first answer and changes nothing.
    assert (202, 1) == (again[0], again[1]["accepted"])
    assert before == world.relay.db("SELECT COUNT(*) FROM deliveries")


def test_a_captured_relay_request_is_taken_once(world: World) -> None:
    key = key_of(world.b)
    body, headers = signed_for_plugin(world.b, key, "users", after=0, limit=1000)
    url = f"{world.b.url}/wp-json/userrelay/v1/users"

    first = send(url, body, headers)
    again = send(url, body, headers)
    elsewhere = [send(f"{world.b.url}/wp-json/userrelay/v1/{op}", body, headers)
                 for op in PLUGIN_OPERATIONS if op != "users"]
    at_relay = send(f"{world.relay.url}/v1/sites/b/events", body, headers)

    assert 200 == first[0] and "users" in first[1]
    assert (401, "userrelay_replayed") == (again[0], again[1]["code"])
    assert all(status in (400, 401) for status, _ in elsewhere), elsewhere
    assert 401 == at_relay[0]  # the relay -> site secret is not the site -> relay one


def test_a_replayed_delivery_is_refused_and_applies_nothing(world: World) -> None:
    key = key_of(world.b)
    delivery = {"id": "1", "origin": {"site": "a", "event_id": f"replayed-{uuid.uuid4()}"},
                "occurred_at": time.time(), "actions": ["create"],
                "match": {"by": "email", "user_id": None}, "create_missing": True,
                "user": {"login": "replayed", "email": "replayed@example.test",
                         "first_name": "Once"}}
    body, headers = signed_for_plugin(world.b, key, "events", events=[delivery])
    url = f"{world.b.url}/wp-json/userrelay/v1/events"

    first = send(url, body, headers)
    world.b.php("$u = get_user_by('email', 'replayed@example.test'); "
                "wp_update_user(['ID' => $u->ID, 'first_name' => 'Changed']);")
    again = send(url, body, headers)

    assert (200, 201) == (first[0], first[1]["results"][0]["status"])
    assert (401, "userrelay_replayed") == (again[0], again[1]["code"])
    assert "Changed" == (user(world.b, "replayed@example.test") or {})["first_name"]


def test_a_protocol_1_relay_gets_an_error_naming_both_versions(world: World) -> None:
    """Signed as protocol 1 did: with the site key itself, no protocol header, a GET ping."""
    key = key_of(world.a)
    now = str(int(time.time()))
    digest = hmac.digest(key.hmac_key, f"msg_v1.{now}.".encode(), hashlib.sha256)
    headers = {"webhook-id": "msg_v1", "webhook-timestamp": now,
               "webhook-signature": "v1," + base64.b64encode(digest).decode()}

    ping = send(f"{world.a.url}/wp-json/userrelay/v1/ping", None, headers, "GET")
    events_body = json.dumps({"events": []}).encode()
    digest = hmac.digest(key.hmac_key, f"msg_v1b.{now}.".encode() + events_body,
                         hashlib.sha256)
    events = send(f"{world.a.url}/wp-json/userrelay/v1/events", events_body,
                  {**headers, "webhook-id": "msg_v1b", "content-type": "application/json",
                   "webhook-signature": "v1," + base64.b64encode(digest).decode()})

    for status, answer in (ping, events):
        assert (400, "userrelay_protocol_version") == (status, answer["code"])
        assert "protocol 2" in answer["message"] and "protocol 1" in answer["message"]


def test_the_plugin_still_answers_the_relays_signed_ping(world: World) -> None:
    status, answer = post_to_plugin(world.a, key_of(world.a), "ping")
    assert (200, 2) == (status, answer["protocol"])
