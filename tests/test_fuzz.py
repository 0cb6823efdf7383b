"""Bad input at every route: refused with a 400 naming the field, never a 500.

First the inputs that once got through or broke the relay, each by name; then a bounded
Hypothesis run against a real relay process (the longer run is ``bench/fuzz.py``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import config as config_module
from relay.errors import InvalidEvent
from relay.model.events import MAX_DEPTH, MAX_META_DEPTH, parse_batch
from tests.support import RelayProcess, event, generate_keys, post_signed, secret, write_config


def body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def with_user(**fields: Any) -> bytes:
    e = event("e1", 1, ["create", "metadata"])
    e["user"].update(fields)
    return body(e)


def with_event(**fields: Any) -> bytes:
    e = event("e1", 1, ["create"])
    e.update(fields)
    return body(e)


def raw_user_id(text: str) -> bytes:
    return with_user(id=0).replace(b'"id": 0', b'"id": ' + text.encode())


UNSTORABLE = {
    "occurred_at NaN": (with_event(occurred_at=float("nan")), "events[0].occurred_at"),
    "occurred_at Infinity": (with_event(occurred_at=float("inf")), "events[0].occurred_at"),
    "occurred_at 1e400": (with_event(occurred_at=0).replace(b'"occurred_at": 0',
                                                            b'"occurred_at": 1e400'),
                          "events[0].occurred_at"),
    "NaN in a meta value": (with_user(meta={"score": float("nan")}),
                            "events[0].user.meta.score"),
    "user.id 2^63": (with_user(id=2**63), "events[0].user.id"),
    "user.id of 4,300 digits": (raw_user_id("9" * 4300), "events[0].user.id"),
    "user.id '²'": (with_user(id="²"), "events[0].user.id"),
    "user.id 0": (with_user(id=0), "events[0].user.id"),
    "lone surrogate in the login": (with_user(login="al\ud800ice"), "events[0].user.login"),
    "lone surrogate in the email": (with_user(email="\udfffa@example.test"),
                                    "events[0].user.email"),
    "lone surrogate in the event id": (with_event(id="e\udc80"), "events[0].id"),
    "lone surrogate in a meta key": (with_user(meta={"k\ud800": "v"}), "events[0].user.meta"),
    "meta nested 600 deep": (with_user(meta={"deep": nested(600)}),
                             "events[0].user.meta.deep"),
    f"meta nested {MAX_META_DEPTH + 1} deep": (with_user(meta={"deep": nested(
        MAX_META_DEPTH + 1)}), "events[0].user.meta.deep"),
    "meta value over 64 KiB": (with_user(meta={"big": "x" * 65_537}),
                               "events[0].user.meta.big"),
    "meta key over 255 characters": (with_user(meta={"k" * 256: "v"}), "events[0].user.meta"),
    "login over 60 characters": (with_user(login="l" * 61), "events[0].user.login"),
    "email over 100 characters": (with_user(email="e" * 90 + "@example.test"),
                                  "events[0].user.email"),
    "display name over 250 characters": (with_user(display_name="d" * 251),
                                         "events[0].user.display_name"),
    "url over 100 characters": (with_user(url="https://example.test/" + "u" * 80),
                                "events[0].user.url"),
    "JSON nested 20,000 deep": (b"[" * 20_000 + b"]" * 20_000, "the body"),
    "invalid UTF-8": (with_user(login="alice").replace(b"alice", b"al\xffce"), "the body"),
}


@pytest.mark.parametrize("name", list(UNSTORABLE))
def test_what_a_wordpress_site_cannot_store_is_refused_naming_the_field(name: str) -> None:
    raw, field = UNSTORABLE[name]

    with pytest.raises(InvalidEvent) as refused:
        parse_batch(raw)

    assert refused.value.message.startswith(field), refused.value.message


def test_what_a_wordpress_site_can_store_is_taken() -> None:
    events = parse_batch(with_user(id=str(2**63 - 1), login="l" * 60, display_name="d" * 250,
                                   meta={"deep": nested(MAX_META_DEPTH), "emoji": "😀",
                                         "big": "x" * 65_536, "n": -(2**63 - 1)}))

    assert (2**63 - 1, "l" * 60) == (events[0].user_id, events[0].user["login"])
    assert MAX_DEPTH > MAX_META_DEPTH


@pytest.mark.parametrize("name", ["occurred_at NaN", "lone surrogate in the login",
                                  "meta nested 600 deep", "user.id 2^63"])
async def test_a_signed_event_a_site_cannot_store_is_refused_and_nothing_is_queued(
        two_sites: Any, name: str) -> None:
    relay, _ = await two_sites()
    events = json.loads(UNSTORABLE[name][0].decode(), parse_constant=float)["events"]

    status, answer = await relay.post("a", events)

    assert 400 == status
    assert answer["error"].startswith(UNSTORABLE[name][1]), answer
    assert [(0,)] == relay.db("SELECT count(*) FROM deliveries")


# --- a bounded fuzz run against a real relay process ------------------------------------------

T = TypeVar("T")
#: Examples per fuzzed route in the normal suite; bench/fuzz.py runs far more.
EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Any JSON, with what breaks naive code: non-finite floats, integers past 64 bits, lone
# surrogates, deep nesting (json.dumps escapes surrogates, so they arrive as \ud800 escapes).
text = st.text(st.characters(codec=None, categories=None), max_size=80) | st.sampled_from(
    ["", "²", "٣", "0", "-1", "1e400", "NaN", "\ud800", "9" * 30, "a" * 300])
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text
           | st.floats(allow_nan=True, allow_infinity=True))
#: Values that broke the relay before (issue reports of 500s), drawn as often as any others.
NASTY = [float("nan"), float("inf"), -float("inf"), 1e300, 2**63, 2**64, -(2**63), 0, -1,
         10**4000, "²", "\ud800", "\udfff", "a\udc80b", "9" * 19, "1" * 40, nested(600),
         nested(40), {"k\ud800": 1}, [float("nan")], "x" * 70_000]
json_values = st.sampled_from(NASTY) | st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(text, inner, max_size=4), max_leaves=12)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible event with some of its fields (or its user's) replaced by any JSON."""
    e = event(draw(st.text(min_size=1, max_size=8)), draw(st.integers(1, 50)),
                   draw(st.sampled_from([["create"], ["edit"], ["delete"], ["metadata"],
                                         ["create", "roles"], ["password"]])))
    for name in draw(st.lists(st.sampled_from(["id", "occurred_at", "actions", "user",
                                                "origin"]), max_size=1)):
        e[name] = draw(json_values)
    if isinstance(e.get("user"), dict):
        for name in draw(st.lists(st.sampled_from(
                ["id", "login", "email", "display_name", "url", "roles", "meta",
                 "meta_deleted", "password_hash", "first_name"]), max_size=2)):
            e["user"][name] = draw(json_values)
    return e


class Fuzzed:
    """A relay process on a loop of its own thread, so that Hypothesis (synchronous) can
    drive it."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.token = secret(secrets.token_urlsafe(32))
        (tmp / "admin.token").write_text(self.token)
        path = write_config(tmp / "relay.yaml", {
            "listen": {"host": "127.0.0.1", "port": 0},
            "admin": {"port": 0, "token_file": str(tmp / "admin.token")},
            "database": str(tmp / "relay.sqlite3"),
            "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                      {"id": "b", "url": "http://127.0.0.1:8", "allow_http": True}],
            "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                       "outgoing": ["create", "edit", "delete", "password", "roles",
                                    "metadata"]}]})
        self.keys = generate_keys(config_module.load(path))
        self.relay = RelayProcess(path)
        self.run(self.relay.start())
        self.admin_url = self.run(self._admin_url())
        self.session = self.run(self._session())
        self.checked = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    async def _admin_url(self) -> str:
        line = await self.relay.logged("admin_started")
        return f"http://127.0.0.1:{line['port']}"

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    async def request(self, method: str, url: str, **kwargs: Any) -> int:
        async with self.session.request(method, url, **kwargs) as resp:
            await resp.read()
            return resp.status

    def unstorable_deliveries(self) -> list[int]:
        """Queued deliveries no WordPress site could apply (their whole batch would fail)."""
        path = self.relay.config_path.parent / "relay.sqlite3"
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)  # never checkpoints
        try:
            rows = conn.execute("SELECT id, payload FROM deliveries WHERE id > ?",
                                (self.checked,)).fetchall()
        finally:
            conn.close()
        self.checked = max([self.checked, *(r[0] for r in rows)])
        return [r[0] for r in rows if not storable(json.loads(r[1]))]

    def close(self) -> None:
        self.run(self.session.close())
        self.run(self.relay.terminate())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    relay = Fuzzed(tmp_path_factory.mktemp("fuzz"))
    yield relay
    relay.close()
    crashed = [line for line in relay.relay.lines if line.get("level") in ("error", "critical")
               and "crash" in str(line.get("event"))]
    assert [] == crashed


@FUZZ
@given(batch=st.lists(events(), min_size=1, max_size=4))
def test_signed_ingest_answers_202_or_names_the_problem_never_5xx(
        fuzzed: Fuzzed, batch: list[dict[str, Any]]) -> None:
    status, answer = fuzzed.run(post_signed(fuzzed.relay.url, "a", fuzzed.keys["a"], batch))

    assert status in (202, 400), (status, answer)
    assert status == 202 or answer["error"]
    assert [] == fuzzed.unstorable_deliveries()


def storable(value: Any) -> bool:
    """Whether a WordPress site's PHP could decode and store ``value`` (strict JSON, UTF-8)."""
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**63
    if isinstance(value, str):
        return value == value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return all(storable(v) for v in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    return True


@FUZZ
@given(path=st.sampled_from(["/v1/sites/a/events", "/v1/sites/zz/events", "/v1/sites/a/ping",
                             "/healthz", "/readyz", "/v1/sites/%ff/events"]),
       method=st.sampled_from(["GET", "POST", "PUT"]),
       headers=st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp",
                                                "webhook-signature", "content-length",
                                                "userrelay-protocol", "content-type"]),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                       max_size=60), max_size=4),
       body=st.binary(max_size=300) | json_values.map(
           lambda v: json.dumps({"events": v}).encode()))
def test_an_unsigned_or_badly_signed_request_is_never_accepted_nor_answered_5xx(
        fuzzed: Fuzzed, path: str, method: str, headers: dict[str, str], body: bytes) -> None:
    headers.pop("content-length", None)  # a wrong one only makes the client fail
    status = fuzzed.run(fuzzed.request(method, f"{fuzzed.relay.url}{path}", data=body,
                                       headers=headers))

    assert status < 500 and status != 202, status


@FUZZ
@given(route=st.sampled_from([("GET", "/admin/status"), ("GET", "/admin/dead"),
                              ("POST", "/admin/dead/replay"), ("POST", "/admin/dead/purge"),
                              ("POST", "/admin/links/a-b/pause"),
                              ("POST", "/admin/links/zz/start"),
                              ("POST", "/admin/sites/zz/rotate-key")]),
       query=st.dictionaries(st.sampled_from(["ids", "limit", "since", "until", "target",
                                              "source", "all", "x"]), text, max_size=3),
       body=st.none() | json_values | st.dictionaries(
           st.sampled_from(["ids", "since", "until", "target", "source", "all", "reason",
                            "grace"]), json_values, max_size=3))
def test_the_admin_api_answers_any_input_without_a_5xx(
        fuzzed: Fuzzed, route: tuple[str, str], query: dict[str, str], body: Any) -> None:
    method, path = route
    data = b"" if body is None else json.dumps(body).encode()
    query = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
             for k, v in query.items()}
    status = fuzzed.run(fuzzed.request(method, f"{fuzzed.admin_url}{path}", params=query,
                                       data=data,
                                       headers={"Authorization": f"Bearer {fuzzed.token}"}))

    assert status < 500, status
