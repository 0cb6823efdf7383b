"""Each action between WordPress releases: 6.1 -> 6.1, 6.8 -> 6.8, 6.1 -> 6.8 and 6.8 -> 6.1.

The system's WordPress (6.1 on Debian 12, 6.8 on Debian 13) runs the session's world; the other
release comes from the other Debian release's package (tests/e2e/wpreleases.py). Each pair is
a world of its own: site a runs the first release, b the second, linked a -> b (push); the test
ids name the pair. Passwords travel as stored hashes: a 6.8 site writes "$wp$" hashes, which
the plugin verifies on 6.1 (UserRelay_Passwords), so the same password logs in on both sites.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.test_developer_hooks import state
from tests.e2e.test_privileges import event
from tests.e2e.test_sync import arrives, can_log_in, create, unique
from tests.e2e.test_user_gaps import RENAME, values
from tests.e2e.world import World, build_world, deliver, user, wait_until
from tests.e2e.wpreleases import system_release

pytestmark = pytest.mark.wordpress

ROUTES = [("6.1", "6.1"), ("6.8", "6.8"), ("6.1", "6.8"), ("6.8", "6.1")]
HASH_PREFIX = {"6.1": "$P$", "6.8": "$wp$"}


@pytest.fixture(scope="module", params=ROUTES, ids=[f"{a}-to-{b}" for a, b in ROUTES])
def pair(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A world whose site a runs the first release and b the second, linked a -> b."""
    default: World = request.getfixturevalue("world")  # skips (or fails under CI) as it does
    releases = request.param
    if releases == (system_release(), system_release()):
        yield default
        return
    base = tmp_path_factory.mktemp("pair-" + "-".join(releases))
    with build_world(base, releases=releases) as world:
        assert (world.a.release, world.b.release) == releases
        yield world


_LINKED: dict[int, str] = {}  # id(world) -> its relay configuration once linked here


@pytest.fixture
def world_ab(pair: World) -> World:
    """The pair linked a -> b with every action; linked once per world, and again when
    another test changed the session world's link meanwhile."""
    if _LINKED.get(id(pair)) != pair.relay.config_path.read_text():
        pair.link("push")
        _LINKED[id(pair)] = pair.relay.config_path.read_text()
    return pair


def test_create_arrives_with_its_password(world_ab: World) -> None:
    login, email = unique("paircreate")

    create(world_ab.a, login, email, password="same-Pass-1", first_name="Ada")

    there = arrives(world_ab.b, email, lambda u: u["first_name"] == "Ada", "create")
    assert (login, ["subscriber"]) == (there["login"], there["roles"])
    assert there["pass"].startswith(HASH_PREFIX[world_ab.a.release])
    assert (True, True) == (can_log_in(world_ab.a, login, "same-Pass-1"),
                            can_log_in(world_ab.b, login, "same-Pass-1"))
    assert not can_log_in(world_ab.b, login, "other-Pass-1")


def test_a_created_user_keeps_a_full_strength_hash_unless_a_delivered_one_replaces_it(
        world_ab: World) -> None:
    """A delivered create writes a throwaway hash before the delivered one; only that one is
    made at bcrypt's least cost. A create without a delivered hash keeps its own at full cost."""
    b = world_ab.b
    with_hash, without = unique("pairhashed"), unique("pairunhashed")
    source_hash = str(world_ab.a.php_json("echo json_encode(wp_hash_password('kept-Pass-1'));"))

    results = deliver(b, [event(*with_hash, ["create", "password"], password_hash=source_hash),
                          event(*without, ["create"])])

    assert [201, 201] == [r["status"] for r in results], results
    hashed, unhashed = user(b, with_hash[1]), user(b, without[1])
    assert hashed is not None and unhashed is not None
    assert source_hash == hashed["pass"]
    assert can_log_in(b, with_hash[0], "kept-Pass-1")
    assert unhashed["pass"].startswith(HASH_PREFIX[b.release])
    assert "$2y$04$" not in unhashed["pass"]  # bcrypt's least cost is for throwaway hashes


def test_edit_arrives(world_ab: World) -> None:
    login, email = unique("pairedit")
    uid = create(world_ab.a, login, email)
    arrives(world_ab.b, email)

    world_ab.a.php(f"wp_update_user(['ID' => {uid}, 'first_name' => 'Grace', "
                   "'last_name' => 'Hopper']);")

    arrives(world_ab.b, email, lambda u: (u["first_name"], u["last_name"]) == ("Grace", "Hopper"),
            "edit")


def test_password_change_logs_in_on_both_sites(world_ab: World) -> None:
    login, email = unique("pairpass")
    uid = create(world_ab.a, login, email, password="first-Pass-1")
    arrives(world_ab.b, email)

    world_ab.a.php(f"wp_set_password('second-Pass-2', {uid});")

    wait_until("the new password works on site b",
               lambda: can_log_in(world_ab.b, login, "second-Pass-2"))
    assert can_log_in(world_ab.a, login, "second-Pass-2")
    assert (False, False) == (can_log_in(world_ab.a, login, "first-Pass-1"),
                              can_log_in(world_ab.b, login, "first-Pass-1"))


def test_role_change_arrives(world_ab: World) -> None:
    login, email = unique("pairrole")
    uid = create(world_ab.a, login, email)
    arrives(world_ab.b, email)

    world_ab.a.php(f"(new WP_User({uid}))->set_role('author');")

    arrives(world_ab.b, email, lambda u: u["roles"] == ["author"], "roles")


def test_metadata_arrives(world_ab: World) -> None:
    login, email = unique("pairmeta")
    uid = create(world_ab.a, login, email)
    arrives(world_ab.b, email)

    world_ab.a.php(f"update_user_meta({uid}, 'favourite_colour', 'green');")

    arrives(world_ab.b, email, lambda u: u["meta"] == "green", "metadata")


def test_delete_arrives(world_ab: World) -> None:
    login, email = unique("pairdelete")
    uid = create(world_ab.a, login, email)
    arrives(world_ab.b, email)

    world_ab.a.php(f"require_once ABSPATH . 'wp-admin/includes/user.php'; wp_delete_user({uid});")

    wait_until("the delete reaches site b", lambda: user(world_ab.b, email) is None)


def test_connection_test_passes_the_hash_format_check(world_ab: World) -> None:
    checks = {c["name"]: c for c in json.loads(world_ab.admin("sites", "test", "b", "--json"))[
        "checks"]}

    hashes = checks["hash_formats"]
    assert "ok" == hashes["status"], hashes
    by_plugin = f"wp-bcrypt ($wp$, by the plugin on WordPress {world_ab.b.release}"
    assert (by_plugin in hashes["detail"]) == (world_ab.b.release < "6.8"), hashes["detail"]


def test_several_meta_values_arrive_whole(world_ab: World) -> None:
    login, email = unique("pairseveral")
    uid = create(world_ab.a, login, email)

    world_ab.a.php(f"add_user_meta({uid}, 'phone', 'one'); add_user_meta({uid}, 'phone', 'two');")

    wait_until("both values reach site b", lambda: values(world_ab.b, email, "phone") == [
        "one", "two"])


def test_a_user_without_an_email_arrives_by_login(world_ab: World) -> None:
    login, _ = unique("pairnoemail")

    create(world_ab.a, login, "", password="bare-Pass-1", first_name="Bare")

    wait_until("the user without an email reaches site b", lambda: (
        state(world_ab.b, login) or {}).get("first_name") == "Bare")
    assert can_log_in(world_ab.b, login, "bare-Pass-1")


def test_a_login_rename_arrives_and_logs_in(world_ab: World) -> None:
    login, email = unique("pairrename")
    uid = create(world_ab.a, login, email, password="rename-Pass-1")
    arrives(world_ab.b, email)

    world_ab.a.php(RENAME.format(new=json.dumps(f"new{login}"), uid=uid))

    arrives(world_ab.b, email, lambda u: u["login"] == f"new{login}", "the rename")
    assert can_log_in(world_ab.b, f"new{login}", "rename-Pass-1")
