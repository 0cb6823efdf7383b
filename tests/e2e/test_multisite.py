"""Multisite configuration, on a real two-site subdirectory network (127.0.0.1:PORT/ and /sub/):
only the network admin configures the plugin, for each blog; a sub-site admin can neither see nor
set any blog's key (settings page, admin-post, options.php, the REST settings); per-blog options
are ignored; each blog's plugin lists and changes only its own blog's members, and a blog that is
not connected refuses deliveries. Syncing a network: test_multisite_sync.py.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.keys.crypto import SiteKey
from tests.e2e.lab_packages import ensure_packages
from tests.e2e.lab_site import Site
from tests.e2e.world import PLUGIN, free_port, send, signed_for_plugin
from tests.e2e.wplab import Lab

pytestmark = pytest.mark.wordpress

KEY = SiteKey.generate().secret
SUB_ADMIN, SUB_PASSWORD = "subadmin", "Sub-admin-Pass-1"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if reason := ensure_packages():
        pytest.skip(f"real WordPress cannot run here: {reason}")
    base: Path = tmp_path_factory.mktemp("network")
    with Lab(base / "lab") as lab:
        site = lab.add_site("net", free_port(), plugin_dirs={"userrelay": PLUGIN},
                            subsites=["sub"])
        site.php(f"""
            update_site_option('userrelay_url', 'http://127.0.0.1:9');
            update_site_option('userrelay_site', 'net');
            update_site_option('userrelay_key', '{KEY}');
            $id = wp_insert_user(['user_login' => '{SUB_ADMIN}', 'user_pass' => '{SUB_PASSWORD}',
                'user_email' => 'subadmin@example.test', 'role' => '']);
            remove_user_from_blog($id, 1);
            add_user_to_blog({site.subsites['sub']}, $id, 'administrator');""")
        yield site


def browser(site: Site, login: str, password: str) -> urllib.request.OpenerDirector:
    """A client logged in through wp-login.php, keeping its cookies."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.ProxyHandler({}))
    opener.open(f"{site.url}/wp-login.php", timeout=30).read()  # the test cookie
    form = urllib.parse.urlencode({"log": login, "pwd": password, "testcookie": "1",
                                   "redirect_to": f"{site.url}/sub/wp-admin/"}).encode()
    opener.open(f"{site.url}/wp-login.php", data=form, timeout=30).read()
    assert any(c.name.startswith("wordpress_logged_in") for c in jar), "login failed"
    return opener


def fetch(opener: urllib.request.OpenerDirector, url: str,
          form: dict[str, str] | None = None) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(url, data=data, timeout=30) as answer:
            return int(answer.status), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read().decode(errors="replace")


def settings(site: Site, blog: int = 1) -> dict[str, str]:
    seen: dict[str, str] = site.php_json(f"""switch_to_blog({blog});
        $s = new UserRelay_Settings();
        echo json_encode(['url' => $s->url(), 'site' => $s->site(), 'key' => $s->key()]);""")
    return seen


def deliver(site: Site, path: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
    """POSTs a signed delivery to the plugin under ``path`` ('' or '/sub'); status and body."""
    body, headers = signed_for_plugin(site, SiteKey(KEY), "events", events=events)
    return send(f"{site.url}{path}/wp-json/userrelay/v1/events", body, headers)


def event(login: str, email: str, actions: list[str], **user: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    return {"id": tag, "origin": {"site": "a", "event_id": tag}, "actions": actions,
            "occurred_at": time.time(), "match": {"by": "email"},
            "user": {"id": 1, "login": login, "email": email, **user}}


def test_a_sub_site_admin_cannot_see_or_set_the_key(network: Site) -> None:
    before = (settings(network), settings(network, 2))
    sub = browser(network, SUB_ADMIN, SUB_PASSWORD)

    page_status, page = fetch(sub, f"{network.url}/sub/wp-admin/options-general.php"
                                   "?page=userrelay")
    net_status, _ = fetch(sub, f"{network.url}/sub/wp-admin/network/settings.php"
                               "?page=userrelay")
    _, general = fetch(sub, f"{network.url}/sub/wp-admin/options-general.php")
    nonce = re.search(r'name="_wpnonce" value="([0-9a-f]+)"', general)
    assert nonce, "the sub-site admin reaches their own General Settings"
    save_status, _ = fetch(sub, f"{network.url}/sub/wp-admin/admin-post.php", {
        "action": "userrelay_save", "_wpnonce": nonce.group(1), "blog": "2",
        "userrelay_url": "https://evil.example", "userrelay_key": SiteKey.generate().secret})
    fetch(sub, f"{network.url}/sub/wp-admin/options.php", {
        "option_page": "general", "action": "update", "_wpnonce": nonce.group(1),
        "userrelay_key": SiteKey.generate().secret, "userrelay_url": "https://evil.example"})

    assert page_status == 403 and "userrelay_key" not in page and KEY[:12] not in page
    assert net_status in (302, 403)  # the network admin is not theirs
    assert 403 == save_status
    assert before == (settings(network), settings(network, 2))


def test_a_sub_site_admin_cannot_read_the_key_through_the_rest_api(network: Site) -> None:
    secret = network.php_json(f"""$u = get_user_by('login', '{SUB_ADMIN}');
        [$pass] = WP_Application_Passwords::create_new_application_password($u->ID,
            ['name' => 'probe']);
        echo json_encode($pass);""")
    auth = base64.b64encode(f"{SUB_ADMIN}:{secret}".encode()).decode()
    request = urllib.request.Request(f"{network.url}/sub/wp-json/wp/v2/settings",
                                     headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        shown = answer.read().decode()

    assert "title" in json.loads(shown)  # they are an admin of the sub-site
    assert "userrelay" not in shown and KEY[6:20] not in shown


def test_per_blog_options_are_ignored_on_a_network(network: Site) -> None:
    before = (settings(network), settings(network, 2))

    network.php(f"""foreach ([1, {network.subsites['sub']}] as $blog) {{
        switch_to_blog($blog);
        update_option('userrelay_key', '{SiteKey.generate().secret}');
        update_option('userrelay_url', 'https://evil.example');
        restore_current_blog(); }}""")

    assert before == (settings(network), settings(network, 2))


def test_only_the_network_admin_gets_the_settings_page(network: Site) -> None:
    admin = browser(network, network.admin_login, network.admin_password)

    status, page = fetch(admin, f"{network.url}/wp-admin/network/settings.php?page=userrelay")

    assert 200 == status and "Test Connection" in page


def test_users_of_another_blog_are_neither_listed_nor_changed(network: Site) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = network.php_json(f"""
        $main = wp_insert_user(['user_login' => 'main{tag}', 'user_pass' => 'x-Pass-1',
            'user_email' => 'main{tag}@example.test', 'role' => 'subscriber']);
        $other = wpmu_create_user('other{tag}', 'x-Pass-1', 'other{tag}@example.test');
        add_user_to_blog({network.subsites['sub']}, $other, 'subscriber');
        echo json_encode([$main, $other]);""")
    listed = network.php_json("$p = (new UserRelay_Directory(new UserRelay_Settings()))"
                              "->page(0, 1000); echo json_encode(array_column($p['users'], 'id'));")

    status, answer = deliver(network, "", [event(f"other{tag}", f"other{tag}@example.test",
                                                 ["edit"], first_name="Mallory")])
    sub_status, _ = deliver(network, "/sub", [event(f"other{tag}", f"other{tag}@example.test",
                                                    ["edit"], first_name="Mallory")])

    assert ids[0] in listed and ids[1] not in listed
    assert 200 == status and 422 == answer["results"][0]["status"], answer
    assert "not a member" in answer["results"][0]["error"]
    assert 401 == sub_status  # blog 2 is not connected: it has no key to check a delivery with
    assert "" == network.php_json(f"echo json_encode(get_userdata({ids[1]})->first_name);")
