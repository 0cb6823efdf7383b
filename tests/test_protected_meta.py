"""Protected user meta at the relay: what may never travel is never forwarded, compared the
way the database compares keys, by the same rule as the plugin; a link's allow-list narrows it
(relay/config/protected_meta.py, docs/security.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.config import protected_meta
from relay.errors import ConfigError
from tests.relay_settings import settings, site
from tests.support import event

PLUGIN_RULE = (Path(__file__).resolve().parents[1] / "plugin-stub" / "userrelay" / "includes"
               / "class-userrelay-protected-meta.php")

#: Keys an attacker would send, each of which MariaDB compares equal to a protected row.
ATTACKS = ["WP_CAPABILITIES", "wp_capabilities ", "wp_capabilitiés", "Wp_Capabilities",
           "wp_2_capabilities", "wp_user_level", "WP_USER_LEVEL ", "session_tokens",
           "SESSION_TOKENS", "_application_passwords", "_Application_Passwords_last_used",
           "userrelay_modified", "wp_user-settings", "\u200bwp_capabilities",
           "wp_capabilities\t", "ｗｐ_capabilities", "community-events-location"]  # noqa: RUF001
#: Keys sites really sync.
FINE = ["billing_city", "favourite_colour", "first_login", "nickname_hint", "WooCommerce-Key",
        "_wc_last_active"]


@pytest.mark.parametrize("key", ATTACKS)
def test_a_protected_key_in_any_spelling_the_database_confuses_is_never_synced(key: str) -> None:
    assert not protected_meta.syncable(key)
    assert protected_meta.problem(key)


@pytest.mark.parametrize("key", FINE)
def test_ordinary_keys_are_synced(key: str) -> None:
    assert protected_meta.syncable(key)


@pytest.mark.skipif(shutil.which("php") is None, reason="needs the php command")
def test_the_plugin_applies_the_same_rule() -> None:
    script = (f"define('ABSPATH', '/'); function wp_json_encode($v) {{ return json_encode($v); }}"
              f"require {json.dumps(str(PLUGIN_RULE))};"
              "$keys = json_decode(stream_get_contents(STDIN), true);"
              "echo json_encode(array_map(function ($k) { return "
              "UserRelay_Protected_Meta::is_syncable($k); }, $keys));")
    keys = ATTACKS + FINE + ["", "a b", "x" * 300]
    run = subprocess.run(["php", "-r", script], input=json.dumps(keys), capture_output=True,
                         text=True, check=True)
    assert [protected_meta.syncable(k) for k in keys] == json.loads(run.stdout)


def test_an_allow_list_takes_exact_keys_and_prefixes() -> None:
    allow = (("billing_*", "favourite_colour"),)
    assert protected_meta.allowed("billing_city", allow)
    assert protected_meta.allowed("favourite_colour", allow)
    assert not protected_meta.allowed("favourite_colour_2", allow)
    assert not protected_meta.allowed("shipping_city", allow)
    assert not protected_meta.allowed("billing_capabilities", allow)  # protected still wins


def test_a_link_cannot_allow_a_protected_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", "http://127.0.0.1:10")],
                 [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                   "meta_keys": ["billing_*", "WP_Capabilities", "bad key"]}])
    problems = "\n".join(refused.value.problems)
    assert "links[0] (a-b).meta_keys: 'WP_Capabilities' cannot be synced" in problems
    assert "'bad key' cannot be synced" in problems


async def test_protected_keys_sent_by_a_site_are_never_forwarded(two_sites: Any) -> None:
    relay, b = await two_sites()
    meta = dict.fromkeys(ATTACKS, 'a:1:{s:13:"administrator";b:1;}')
    meta["billing_city"] = "Oslo"
    hostile = event("e1", 1, ["create", "metadata"], meta=meta,
                    meta_deleted=["Session_Tokens", "old_key"])

    with capture_logs() as logs:
        status, _ = await relay.post("a", [hostile])
    await b.wait_for(lambda: len(b.events) == 1)

    assert 202 == status
    forwarded = b.events[0]["user"]
    assert ({"billing_city": "Oslo"}, ["old_key"]) == (forwarded["meta"],
                                                       forwarded["meta_deleted"])
    warning = next(e for e in logs if e["event"] == "meta_not_forwarded")
    assert ("a", "e1", len(ATTACKS) + 1) == (warning["site"], warning["event_id"],
                                              warning["count"])


async def test_a_links_allow_list_narrows_the_meta_it_carries(relay_factory: Any,
                                                              partner_factory: Any,
                                                              tmp_path: Path) -> None:
    b = await partner_factory()
    relay = await relay_factory(settings(
        tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
        [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
          "outgoing": ["create", "metadata"], "meta_keys": ["billing_*"]}]))
    b.key = relay.keys["b"]

    await relay.post("a", [event("e1", 1, ["create", "metadata"],
                                 meta={"billing_city": "Oslo", "favourite_colour": "green"},
                                 meta_deleted=["billing_zip", "bio"])])
    await b.wait_for(lambda: len(b.events) == 1)

    forwarded = b.events[0]["user"]
    assert ({"billing_city": "Oslo"}, ["billing_zip"]) == (forwarded["meta"],
                                                           forwarded["meta_deleted"])
