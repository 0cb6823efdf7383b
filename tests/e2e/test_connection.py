"""Test Connection on real WordPress: both sides prove they share the site's key."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from relay.keys.crypto import SiteKey
from tests.e2e.lab_site import Site
from tests.e2e.world import World, post_to_plugin

pytestmark = pytest.mark.wordpress


def signed_ping(site: Site, key: SiteKey) -> tuple[int, dict[str, object]]:
    status, answer = post_to_plugin(site, key, "ping")
    return status, answer


def test_the_plugin_answers_a_ping_signed_with_its_sites_key(world: World) -> None:
    status, answer = signed_ping(world.a, SiteKey(str(world.a.constants["USERRELAY_KEY"])))

    assert 200 == status
    assert ("a", world.a.release) == (answer["site"], str(answer["wordpress"])[:3])
    # Before 6.8 the plugin verifies 6.8's "$wp$" hashes itself (a check_password filter).
    assert (["phpass", "bcrypt", "wp-bcrypt"], [] if world.a.release >= "6.8" else ["wp-bcrypt"]
            ) == (answer["hash_formats"], answer["hash_formats_by_plugin"])


def test_the_plugin_refuses_a_ping_signed_with_another_key(world: World) -> None:
    status, _ = signed_ping(world.a, SiteKey(str(world.b.constants["USERRELAY_KEY"])))

    assert 401 == status


def test_test_connection_on_the_settings_page_passes_every_check(world: World) -> None:
    site = world.a
    browser = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    browser.open(f"{site.url}/wp-login.php", timeout=30).read()  # sets the test cookie
    browser.open(f"{site.url}/wp-login.php", urllib.parse.urlencode({
        "log": site.admin_login, "pwd": site.admin_password, "testcookie": "1",
        "redirect_to": f"{site.url}/wp-admin/"}).encode(), timeout=30).read()
    page = browser.open(f"{site.url}/wp-admin/options-general.php?page=userrelay",
                        timeout=30).read().decode()
    form = re.search(r'name="action" value="userrelay_test">.*?name="_wpnonce" value="(\w+)"',
                     page, re.DOTALL)
    assert form is not None, "no Test Connection form on Settings > UserRelay"

    result = browser.open(f"{site.url}/wp-admin/admin-post.php", urllib.parse.urlencode({
        "action": "userrelay_test", "_wpnonce": form.group(1),
        "_wp_http_referer": "/wp-admin/options-general.php?page=userrelay"}).encode(),
        timeout=60).read().decode()

    checks = re.findall(r"<tr><td><strong>(\w+)</strong></td><td>([^<]+)</td>", result)
    assert {"Relay reachable", "Signed request accepted", "Clock"} <= {name for _, name in checks}
    assert [] == [(outcome, name) for outcome, name in checks if outcome == "Failed"]
    assert world.a.constants["USERRELAY_KEY"] not in result
