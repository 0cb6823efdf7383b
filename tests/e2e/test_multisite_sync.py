"""Multisite networks, end to end: a real two-blog subdirectory network (blog 1 at
127.0.0.1:PORT/, blog 2 at /sub/) and a single-site partner, with a real relay between them.

Each blog is a site of its own at the relay (docs/adr/0016-multisite.md): blog 1 is ``net1``
(its site id and key in wp-config.php), blog 2 is ``net2`` (connected by the network admin from
Network Admin → Settings → UserRelay). Only ``net2`` is linked, to ``solo``, both ways; ``net1``
is connected but has no link, so whatever blog 1 reports is recorded by the relay and goes
nowhere. Users are shared by the network: each test makes its own and asserts only about them.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import config as config_module
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.keys.signatures import Direction
from tests.e2e.lab_packages import ensure_packages
from tests.e2e.lab_site import Site
from tests.e2e.world import (
    ALL,
    PLUGIN,
    RelayDaemon,
    free_port,
    send,
    user,
    wait_until,
)
from tests.e2e.wplab import Lab
from tests.support import secret_key

pytestmark = pytest.mark.wordpress


class NetworkRelay(RelayDaemon):
    """The relay with a site per blog: ids and URLs given, rather than one per lab site."""

    def __init__(self, workdir: Path, endpoints: dict[str, str]) -> None:
        self.endpoints = endpoints
        super().__init__(workdir, {})

    def configure(self, links: list[dict[str, Any]], **delivery: Any) -> None:
        document = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database": str(self.workdir / "relay.sqlite3"),
            "delivery": {"retry_schedule": ["1s", "2s"], "jitter": 0.1, "max_attempts": 100,
                         "timeout": 20, "lease": 60, **delivery},
            "sites": [{"id": name, "label": name, "url": url, "allow_http": True}
                      for name, url in self.endpoints.items()],
            "links": links,
        }
        self.config_path.write_text(yaml.safe_dump(document))

    def generate_keys(self) -> dict[str, str]:
        config = config_module.load(self.config_path)
        store = KeyStore(config.database_path, config.master_key_path)
        try:
            return {name: secret_key(store.generate(name)).secret for name in self.endpoints}
        finally:
            store.close()

    def admin(self, *args: str) -> None:
        result = self.userrelay(*args)
        assert 0 == result.returncode, (f"userrelay {' '.join(args)}:\n"
                                        f"{result.stdout}{result.stderr}")


class Network:
    """The network (blogs 1 and 2), the partner and the relay."""

    def __init__(self, net: Site, solo: Site, relay: NetworkRelay, keys: dict[str, str]) -> None:
        self.net, self.solo, self.relay, self.keys = net, solo, relay, keys
        self.sub = net.subsites["sub"]

    def roles(self, user_id: int, blog: int) -> list[str] | None:
        """The user's roles on a blog; None when they are not a member of it."""
        found: list[str] | None = self.net.php_json(f"""
            if (!is_user_member_of_blog({user_id}, {blog})) {{ echo 'null'; return; }}
            switch_to_blog({blog});
            echo json_encode(array_values(get_userdata({user_id})->roles));""")
        return found

    def exists(self, user_id: int) -> bool:
        return bool(self.net.php_json(f"echo json_encode((bool) get_userdata({user_id}));"))

    def reported_by(self, site: str, email: str) -> bool:
        """Whether the relay ever heard of this user from ``site`` (every event is recorded)."""
        return bool(self.relay.db("SELECT count(*) FROM accounts WHERE site = ? AND email = ?",
                                  site, email)[0][0])


def unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}{tag}", f"{prefix}{tag}@example.test"


def browser(site: Site, login: str, password: str) -> urllib.request.OpenerDirector:
    """A client logged in through wp-login.php, keeping its cookies."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.ProxyHandler({}))
    opener.open(f"{site.url}/wp-login.php", timeout=30).read()  # the test cookie
    form = urllib.parse.urlencode({"log": login, "pwd": password, "testcookie": "1"}).encode()
    opener.open(f"{site.url}/wp-login.php", data=form, timeout=30).read()
    assert any(c.name.startswith("wordpress_logged_in") for c in jar), "login failed"
    return opener


def connect_blog(net: Site, blog: int, site_id: str, key: str) -> str:
    """What a network admin does: opens Network Admin → Settings → UserRelay for the blog,
    fills in its site id and key, saves; the page shown after the save."""
    admin = browser(net, net.admin_login, net.admin_password)
    page_url = f"{net.url}/wp-admin/network/settings.php?page=userrelay&blog={blog}"
    with admin.open(page_url, timeout=30) as answer:
        page = answer.read().decode()
    nonce = re.search(r'name="_wpnonce" value="([0-9a-f]+)"', page)
    assert nonce, "the network admin's settings page has its form"
    form = {"action": "userrelay_save", "_wpnonce": nonce.group(1), "blog": str(blog),
            "_wp_http_referer": f"/wp-admin/network/settings.php?page=userrelay&blog={blog}",
            "userrelay_site": site_id, "userrelay_key": key}
    with admin.open(f"{net.url}/wp-admin/admin-post.php",
                    data=urllib.parse.urlencode(form).encode(), timeout=60) as answer:
        return str(answer.read().decode())


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    if reason := ensure_packages():
        pytest.skip(f"real WordPress cannot run here: {reason}")
    base: Path = tmp_path_factory.mktemp("multisite")
    with Lab(base / "lab") as lab:
        net = lab.add_site("net", free_port(), plugin_dirs={"userrelay": PLUGIN},
                           subsites=["sub"])
        solo = lab.add_site("solo", free_port(), plugin_dirs={"userrelay": PLUGIN})
        relay = NetworkRelay(base, {"net1": net.url, "net2": f"{net.url}/sub",
                                    "solo": solo.url})
        keys = relay.generate_keys()
        net.set_constants({"USERRELAY_URL": relay.url, "USERRELAY_SITE": "net1",
                           "USERRELAY_KEY": keys["net1"]})
        solo.set_constants({"USERRELAY_URL": relay.url, "USERRELAY_SITE": "solo",
                            "USERRELAY_KEY": keys["solo"]})
        world = Network(net, solo, relay, keys)
        world.saved_page = connect_blog(net, world.sub, "net2", keys["net2"])  # type: ignore[attr-defined]
        relay.configure([{"id": "net2-solo", "site": "net2", "remote": "solo",
                          "direction": "bidirectional", "outgoing": ALL, "incoming": ALL,
                          "match_by": "email"}])
        relay.start()
        try:
            for site in ("net1", "net2", "solo"):
                relay.admin("sites", "test", site)
            relay.admin("links", "start", "net2-solo")
            yield world
        finally:
            relay.stop()


def solo_user(world: Network, email: str, check: Any = lambda u: u is not None,
              what: str = "the change") -> dict[str, Any]:
    def arrived() -> Any:
        return (u := user(world.solo, email)) is not None and check(u) and u
    return wait_until(f"{what} for {email} reaches the partner",  # type: ignore[no-any-return]
                      arrived, timeout=60, every=0.5)


def network_user(world: Network, login: str, email: str, blogs: dict[int, str]) -> int:
    """A user of the network (wpmu_create_user: no blog yet) added to these blogs with these
    roles, in one request."""
    adds = "".join(f"add_user_to_blog({blog}, $id, '{role}');" for blog, role in blogs.items())
    return int(world.net.php_json(f"""$id = wpmu_create_user('{login}', 'net-Pass-1', '{email}');
        {adds} echo json_encode($id);"""))


def test_the_network_admin_connects_each_blog_on_its_own(network: Network) -> None:
    seen = network.net.php_json(f"""$out = [];
        foreach ([1, {network.sub}] as $blog) {{ switch_to_blog($blog);
            $s = new UserRelay_Settings();
            $out[] = [$s->site(), $s->key() !== '', $s->is_configured(),
                (bool) wp_next_scheduled('userrelay_flush')]; restore_current_blog(); }}
        echo json_encode($out);""")

    assert [["net1", True, True, True], ["net2", True, True, True]] == seen
    assert "net2" in network.saved_page and "net1" in network.saved_page  # type: ignore[attr-defined]
    assert network.keys["net2"] not in network.saved_page  # type: ignore[attr-defined]


def test_a_user_added_to_blog_2_is_created_on_the_partner_with_their_role_there(
        network: Network) -> None:
    login, email = unique("added")
    user_id = network_user(network, login, email, {1: "subscriber"})

    network.net.php(f"add_user_to_blog({network.sub}, {user_id}, 'author');")

    arrived = solo_user(network, email, what="the add to blog 2")
    assert login == arrived["login"] and ["author"] == arrived["roles"]
    assert ["subscriber"] == network.roles(user_id, 1)


def test_a_user_removed_from_blog_2_is_deleted_on_the_partner_and_stays_on_the_network(
        network: Network) -> None:
    login, email = unique("removed")
    user_id = network_user(network, login, email, {1: "subscriber", network.sub: "author"})
    solo_user(network, email, what="the add")

    network.net.php(f"remove_user_from_blog({user_id}, {network.sub});")

    wait_until(f"the removal of {email} from blog 2 deletes them on the partner",
               lambda: user(network.solo, email) is None, timeout=60, every=0.5)
    assert network.exists(user_id) and ["subscriber"] == network.roles(user_id, 1)
    assert network.roles(user_id, network.sub) is None


def test_a_network_delete_is_a_delete_on_each_blog_the_user_belonged_to(
        network: Network) -> None:
    login, email = unique("netdel")
    user_id = network_user(network, login, email, {1: "subscriber", network.sub: "author"})
    solo_user(network, email, what="the add")

    network.net.php(f"require_once ABSPATH . 'wp-admin/includes/ms.php'; "
                    f"wpmu_delete_user({user_id});")

    wait_until(f"the network delete of {email} reaches the partner",
               lambda: user(network.solo, email) is None, timeout=60, every=0.5)
    assert not network.exists(user_id)


def test_a_super_admin_is_never_synced_nor_changed(network: Network) -> None:
    boss_login, boss_email = unique("boss")
    login, email = unique("beside")
    boss = network_user(network, boss_login, boss_email, {})
    network.net.php(f"grant_super_admin({boss});")

    # In one request: the super admin and a plain user join blog 2 as subscribers.
    network.net.php(f"""add_user_to_blog({network.sub}, {boss}, 'subscriber');
        $id = wpmu_create_user('{login}', 'net-Pass-1', '{email}');
        add_user_to_blog({network.sub}, $id, 'subscriber');""")
    solo_user(network, email, what="the plain user's add")
    status, answer = deliver_to_blog_2(network, [_delivered(boss_login, boss_email)])

    # Not even where the site syncs its privileged users.
    opted_in = network.net.php(f"""switch_to_blog({network.sub});
        $checks = new UserRelay_Delivery_Checks(new UserRelay_Settings());
        $boss = get_userdata({boss});
        echo (new UserRelay_Snapshot(new UserRelay_Settings()))->reported($boss) ? 'sent' : 'kept';
        try {{ $checks->not_privileged($boss, null, 'boss'); echo ' changed'; }}
        catch (UserRelay_Apply_Exception $e) {{ echo ' refused'; }}""",
        before_load="define('USERRELAY_SYNC_PRIVILEGED', true);")

    assert user(network.solo, boss_email) is None
    assert not network.reported_by("net2", boss_email)
    assert 200 == status and 422 == answer["results"][0]["status"], answer
    assert "super admin" in answer["results"][0]["error"]
    assert "" == network.net.php_json(f"echo json_encode(get_userdata({boss})->first_name);")
    assert "kept refused" == opted_in


def test_an_administrator_of_blog_1_is_neither_sent_nor_changed_by_blog_2(
        network: Network) -> None:
    # Their row and password are the network's: blog 2's partners must not read or set them.
    chief_login, chief_email = unique("chief")
    login, email = unique("plain")
    chief = network_user(network, chief_login, chief_email, {1: "administrator"})

    network.net.php(f"""add_user_to_blog({network.sub}, {chief}, 'author');
        $id = wpmu_create_user('{login}', 'net-Pass-1', '{email}');
        add_user_to_blog({network.sub}, $id, 'author');""")
    solo_user(network, email, what="the plain user's add")
    status, answer = deliver_to_blog_2(network, [_delivered(chief_login, chief_email)])

    assert user(network.solo, chief_email) is None
    assert 200 == status and 422 == answer["results"][0]["status"], answer
    assert "on blog 1" in answer["results"][0]["error"]
    assert "" == network.net.php_json(f"echo json_encode(get_userdata({chief})->first_name);")


def test_a_user_of_blog_2_is_not_reported_by_blog_1(network: Network) -> None:
    login, email = unique("onlytwo")
    user_id = network_user(network, login, email, {network.sub: "subscriber"})
    network.net.php(f"wp_update_user(['ID' => {user_id}, 'first_name' => 'Twice']);")

    solo_user(network, email, lambda u: u["first_name"] == "Twice", what="the edit")
    listed = network.net.php_json(f"""$out = [];
        foreach ([1, {network.sub}] as $blog) {{ switch_to_blog($blog);
            $page = (new UserRelay_Directory(new UserRelay_Settings()))->page(0, 1000);
            $out[] = in_array({user_id}, array_column($page['users'], 'id'), true);
            restore_current_blog(); }}
        echo json_encode($out);""")

    assert [False, True] == listed
    assert network.reported_by("net2", email) and not network.reported_by("net1", email)


def test_roles_are_per_blog_both_ways(network: Network) -> None:
    login, email = unique("roles")
    user_id = network_user(network, login, email, {1: "author", network.sub: "subscriber"})
    solo_user(network, email, lambda u: u["roles"] == ["subscriber"], what="blog 2's role")

    network.solo.php(f"get_user_by('email', '{email}')->set_role('contributor');")
    wait_until("the partner's role change reaches blog 2",
               lambda: network.roles(user_id, network.sub) == ["contributor"],
               timeout=60, every=0.5)
    network.net.php(f"get_userdata({user_id})->set_role('subscriber');")  # on blog 1
    network.net.php(f"wp_update_user(['ID' => {user_id}, 'first_name' => 'Later']);")
    arrived = solo_user(network, email, lambda u: u["first_name"] == "Later",
                        what="the edit after blog 1's role change")

    assert ["subscriber"] == network.roles(user_id, 1)  # blog 1's own, untouched by blog 2's
    assert ["contributor"] == arrived["roles"]  # blog 1's role change never left for blog 2's


def test_a_delivered_create_adds_the_existing_network_user_to_blog_2(network: Network) -> None:
    login, email = unique("joins")
    user_id = network_user(network, login, email, {1: "subscriber"})

    network.solo.php(f"wp_insert_user(['user_login' => '{login}', 'user_email' => '{email}', "
                     "'user_pass' => 'solo-Pass-1', 'role' => 'author']);")

    wait_until("the partner's create adds the network user to blog 2",
               lambda: network.roles(user_id, network.sub) == ["author"], timeout=60, every=0.5)
    assert ["subscriber"] == network.roles(user_id, 1)
    assert 1 == int(network.net.php_json(
        f"echo json_encode(count(get_users(['blog_id' => 0, 'search' => '{email}'])));"))


def test_a_delivered_delete_removes_the_user_from_blog_2_only(network: Network) -> None:
    login, email = unique("leaves")
    user_id = network_user(network, login, email, {1: "subscriber", network.sub: "author"})
    solo_user(network, email, what="the add")

    network.solo.php("require_once ABSPATH . 'wp-admin/includes/user.php'; "
                     f"wp_delete_user(get_user_by('email', '{email}')->ID);")

    wait_until("the partner's delete removes the user from blog 2",
               lambda: network.roles(user_id, network.sub) is None, timeout=60, every=0.5)
    assert network.exists(user_id) and ["subscriber"] == network.roles(user_id, 1)


def test_a_delivered_delete_deletes_a_user_left_in_no_blog_only_where_the_network_opts_in(
        network: Network) -> None:
    kept_login, kept_email = unique("kept")
    gone_login, gone_email = unique("gone")
    kept = network_user(network, kept_login, kept_email, {network.sub: "author"})
    solo_user(network, kept_email, what="the add")
    network.solo.php("require_once ABSPATH . 'wp-admin/includes/user.php'; "
                     f"wp_delete_user(get_user_by('email', '{kept_email}')->ID);")
    wait_until("the delete removes the user from blog 2",
               lambda: network.roles(kept, network.sub) is None, timeout=60, every=0.5)

    network.net.set_constants({"USERRELAY_NETWORK_DELETE": True})
    try:
        gone = network_user(network, gone_login, gone_email, {network.sub: "author"})
        solo_user(network, gone_email, what="the add")
        network.solo.php("require_once ABSPATH . 'wp-admin/includes/user.php'; "
                         f"wp_delete_user(get_user_by('email', '{gone_email}')->ID);")
        wait_until("the delete deletes the user from the network",
                   lambda: not network.exists(gone), timeout=60, every=0.5)
    finally:
        network.net.set_constants({"USERRELAY_NETWORK_DELETE": None})

    assert network.exists(kept)  # without the setting: a network user of no blog


def deliver_to_blog_2(world: Network, events: list[dict[str, Any]]) -> tuple[int, Any]:
    """A delivery POSTed to blog 2's plugin as the relay sends it to net2; status and answer."""
    body = json.dumps(signatures.envelope("events", "net2", events=events)).encode()
    headers = signatures.headers(SiteKey(world.keys["net2"]), body, Direction.TO_SITE)
    return send(f"{world.net.url}/sub/wp-json/userrelay/v1/events", body, headers)


def _delivered(login: str, email: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    return {"id": tag, "origin": {"site": "solo", "event_id": tag}, "actions": ["create"],
            "occurred_at": 0, "match": {"by": "email"},
            "user": {"id": 1, "login": login, "email": email, "first_name": "Mallory",
                     "roles": ["subscriber"]}}
