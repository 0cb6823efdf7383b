"""The plugin refuses a plain-http relay URL unless the relay is on this machine (as the relay
refuses plain-http site URLs): the key's signatures and users' data never cross a network
unencrypted. Checked in WordPress, through the settings the page and the outbox use.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.world import World

pytestmark = pytest.mark.wordpress

ALLOWED = ["https://relay.example.com", "http://127.0.0.1:8480", "http://127.9.9.9",
           "http://localhost:8480", "http://[::1]:8480", "HTTP://LOCALHOST"]
REFUSED = ["http://relay.example.com", "http://10.0.0.5:8480", "http://[::2]:8480",
           "http://128.0.0.1", "http://localhost.example.com", "ftp://127.0.0.1"]


def test_plain_http_is_refused_unless_the_relay_is_on_this_machine(world: World) -> None:
    problems = world.a.php_json(
        f"$r = []; foreach (json_decode('{json.dumps(ALLOWED + REFUSED)}') as $url) {{"
        " $r[$url] = UserRelay_Settings::url_problem($url); } echo json_encode($r);")

    assert dict.fromkeys(ALLOWED) == {url: problems[url] for url in ALLOWED}
    assert all(problems[url] for url in REFUSED), problems
    assert "https://" in problems["http://relay.example.com"]  # says what to do

