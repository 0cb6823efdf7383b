"""The plugin's send path under a site's own traffic: users created through the REST API by
concurrent clients, each request ending with at most a short send after its answer, and nothing
lost or reordered, also while the relay restarts."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.test_sync import arrives, create, unique
from tests.e2e.world import World, outbox, wait_until
from tests.e2e.wpadmin import app_password

pytestmark = pytest.mark.wordpress

CLIENTS = 8


def rest(site: Site, auth: str, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{site.url}/wp-json/wp/v2/{path}",
                                     data=json.dumps(body).encode(), method="POST", headers={
                                         "Authorization": f"Basic {auth}",
                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def create_then_edit(site: Site, logins: list[str], done: Callable[[], None]) -> None:
    """Each login created (first name v0) then edited (v1) through the REST API, by CLIENTS
    concurrent clients; ``done`` is called after each user's two requests."""
    auth = app_password(site)

    def one(login: str) -> None:
        made = rest(site, auth, "users", {"username": login, "email": f"{login}@example.test",
                                          "password": "send-Pass-1", "roles": ["subscriber"],
                                          "first_name": "v0"})
        rest(site, auth, f"users/{made['id']}", {"first_name": "v1"})
        done()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, logins))


def first_names(site: Site, prefix: str) -> dict[str, str]:
    rows = site.db_query(
        "SELECT u.user_login, m.meta_value FROM wp_users u JOIN wp_usermeta m ON "
        f"m.user_id = u.ID AND m.meta_key = 'first_name' WHERE u.user_login LIKE '{prefix}%'")
    return {str(r["user_login"]): str(r["meta_value"]) for r in rows}


def delivered_in_order(world: World, prefix: str) -> dict[str, list[str]]:
    """Per user, the first names the relay delivered to b, in delivery order."""
    lines: dict[str, list[str]] = defaultdict(list)
    for (payload,) in world.relay.db("SELECT payload FROM deliveries WHERE target = 'b' "
                                     "AND state = 'done' AND payload LIKE ? ORDER BY id",
                                     f"%{prefix}%"):
        user = json.loads(payload)["user"]
        lines[user["login"]].append(user.get("first_name", ""))
    return lines


def all_arrive_in_order(world: World, prefix: str, logins: list[str]) -> None:
    everyone = dict.fromkeys(logins, "v1")
    wait_until(f"all {len(logins)} users reach site b as edited", lambda: first_names(
        world.b, prefix) == everyone, timeout=240, every=1)
    wait_until("site a's outbox empties", lambda: outbox(world.a) == 0, timeout=60)
    wait_until("the relay delivers everything", world.relay.settled, timeout=60)
    out_of_order = {login: names for login, names in delivered_in_order(world, prefix).items()
                    if [n for n in names if n] != sorted(n for n in names if n)}
    assert not out_of_order
    assert [(0,)] == world.relay.db("SELECT count(*) FROM deliveries WHERE state = 'dead' "
                                    "AND payload LIKE ?", f"%{prefix}%")


def test_a_hundred_users_created_at_once_by_eight_clients_all_arrive(world: World) -> None:
    world.link("push")
    prefix = f"burst{uuid.uuid4().hex[:6]}"
    logins = [f"{prefix}{n:03d}" for n in range(100)]

    create_then_edit(world.a, logins, lambda: None)

    all_arrive_in_order(world, prefix, logins)


def test_five_hundred_users_from_eight_clients_arrive_in_order_while_the_relay_restarts_twice(
        world: World) -> None:
    world.link("push")
    prefix = f"restart{uuid.uuid4().hex[:6]}"
    logins = [f"{prefix}{n:03d}" for n in range(500)]
    finished = threading.Semaphore(0)
    restarts: list[str] = []

    def restart_twice() -> None:
        # Down after 100 users, up after 50 more made while down; the same again at 300.
        counted = 0
        try:
            for down_at in (100, 300):
                for _ in range(down_at - counted):
                    finished.acquire()
                world.relay.stop()
                for _ in range(50):
                    finished.acquire()
                counted = down_at + 50
                world.relay.start()
                restarts.append(f"restarted after {down_at + 50} users")
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            restarts.append(f"failed: {error!r}")
    restarter = threading.Thread(target=restart_twice)
    restarter.start()
    try:
        create_then_edit(world.a, logins, finished.release)
    finally:
        restarter.join(120)
        if world.relay.process is None:
            world.relay.start()
    assert ["restarted after 150 users", "restarted after 350 users"] == restarts

    all_arrive_in_order(world, prefix, logins)


def post_form(url: str, fields: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


def test_one_loopback_flush_is_in_flight_at_a_time_and_a_lost_one_is_taken_over(
        world: World) -> None:
    claims = world.a.php_json("""
        $outbox = UserRelay_Plugin::outbox();
        $outbox->release_kick();
        $seen = [$outbox->claim_kick(), $outbox->claim_kick()];
        // A kick that never ran (its request was lost) holds the claim only for a while.
        update_option('userrelay_kick_at', (string) (microtime(true)
            - UserRelay_Outbox::KICK_STALE - 1), false);
        $seen[] = $outbox->claim_kick();
        $seen[] = $outbox->claim_kick();
        $outbox->release_kick();
        $seen[] = $outbox->claim_kick();
        $outbox->release_kick();
        echo json_encode($seen);""")

    assert [True, False, True, False, True] == claims


def test_a_loopback_kick_sends_what_is_due_and_ends_before_the_site_renders(world: World) -> None:
    world.link("push")
    login, email = unique("kick")
    # As if a kick were in flight: the end of the request that creates the user starts none.
    world.a.php("update_option('userrelay_kick_at', (string) (time() + 3600), false);")
    create(world.a, login, email, first_name="Kicked")
    assert 1 == outbox(world.a)
    token = world.a.php_json("echo json_encode(UserRelay_Outbox::flush_token());")

    assert 200 == post_form(world.a.url + "/", {"userrelay_flush": "not-the-token"})
    assert 1 == outbox(world.a)  # a wrong token is just a visitor's POST to the home page

    assert 204 == post_form(world.a.url + "/", {"userrelay_flush": token})
    assert 0 == outbox(world.a)
    assert [{"option_value": "0"}] == world.a.db_query(
        "SELECT option_value FROM wp_options WHERE option_name = 'userrelay_kick_at'")
    arrives(world.b, email, lambda u: u["first_name"] == "Kicked")
