"""wp-admin as a signed-in person drives it, without a browser: a client that logs in through
wp-login.php and keeps its cookies, pages fetched and forms sent through WordPress's own admin
handling (real nonces read from the pages); the users of a site made in one PHP process; and
the events a site's plugin stores in its outbox, recorded by a must-use plugin; application
passwords for REST clients.
"""

from __future__ import annotations

import base64
import contextlib
import html
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from tests.e2e.lab_site import Site


def app_password(site: Site, login: str = "admin") -> str:
    """A new application password of ``login`` on ``site``, as an HTTP Basic credential (the
    core REST API's own authentication, for clients that create users as a site's tools do)."""
    secret = site.php_json(
        f"$u = get_user_by('login', {json.dumps(login)});"
        "[$pass] = WP_Application_Passwords::create_new_application_password("
        "$u->ID, ['name' => 'lab ' . wp_generate_password(6, false)]);"
        "echo json_encode($pass);")
    return base64.b64encode(f"{login}:{secret}".encode()).decode()


class Admin:
    """A person signed in to one site's wp-admin."""

    def __init__(self, site: Site, login: str | None = None, password: str | None = None
                 ) -> None:
        self.site = site
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  urllib.request.ProxyHandler({}))
        self.opener.open(f"{site.url}/wp-login.php", timeout=30).read()  # the test cookie
        form = urllib.parse.urlencode({
            "log": login or site.admin_login, "pwd": password or site.admin_password,
            "testcookie": "1", "redirect_to": f"{site.url}/wp-admin/"}).encode()
        self.opener.open(f"{site.url}/wp-login.php", data=form, timeout=30).read()
        assert any(c.name.startswith("wordpress_logged_in") for c in self.jar), "login failed"

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> tuple[int, str]:
        """GET a wp-admin path (redirects followed); the final status and page."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        try:
            with self.opener.open(f"{self.site.url}{path}{query}", timeout=60) as answer:
                return int(answer.status), answer.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), error.read().decode(errors="replace")

    def bulk_nonce(self) -> str:
        """The bulk-users nonce of the users list, as the page carries it."""
        status, page = self.get("/wp-admin/users.php")
        assert 200 == status, page[-2000:]
        found = re.search(r'id="_wpnonce" name="_wpnonce" value="(\w+)"', page)
        assert found is not None, "the users list has no bulk nonce"
        return found.group(1)


def notice(page: str, css: str) -> str:
    """The text of the admin notice with class ``css`` ("" when there is none)."""
    found = re.search(rf'<div class="[^"]*\b{re.escape(css)}\b[^"]*"><p>(.*?)</p>', page, re.DOTALL)
    return html.unescape(found.group(1)) if found else ""


def make_users(site: Site, users: list[dict[str, Any]]) -> list[int]:
    """Creates users (wp_insert_user fields) in one PHP process; their ids, in order."""
    text = json.dumps(users).replace("\\", "\\\\").replace("'", "\\'")
    ids: list[int] = site.php_json(f"""
        $ids = [];
        foreach (json_decode('{text}', true) as $u) {{
            $id = wp_insert_user($u);
            if (is_wp_error($id)) {{ fwrite(STDERR, $id->get_error_message()); exit(1); }}
            $ids[] = $id;
        }}
        echo json_encode($ids);""")
    return ids


RECORDER = """<?php
add_filter('userrelay_outgoing_event', function ($event) {
    $seen = get_option('e2e_reported', []);
    $seen[] = $event;
    update_option('e2e_reported', $seen, false);
    return $event;
});
"""


@contextlib.contextmanager
def recorded_events(site: Site) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """While open, every event ``site``'s plugin stores (in a web request or a PHP process) is
    recorded as it passes the userrelay_outgoing_event filter, unchanged; yields a function
    returning those recorded so far."""
    folder = site.path / "wp-content" / "mu-plugins"
    folder.mkdir(exist_ok=True)
    recorder = folder / "e2e-record-events.php"
    recorder.write_text(RECORDER)
    site.php("delete_option('e2e_reported');")
    try:
        yield lambda: list(site.php_json("echo json_encode(get_option('e2e_reported', []));"))
    finally:
        recorder.unlink()
        site.php("delete_option('e2e_reported');")
