"""The console's wizard on a real relay: adding a site (its key shown once, the relay learning
it by reload), Test Connection gating the next steps, starting a link with its rules, roles,
fields and initial sync, and editing it; and the admin API it drives.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import yaml

from relay.config import load
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from tests.console_support import (
    KEY,
    add_site,
    two_tested_sites,
    wait_for_link,
    wait_until_known,
)
from tests.support import secret_key, until


async def test_a_refused_site_is_shown_next_to_its_field_and_nothing_is_written(
        console_relay: Any, admin_token: str) -> None:
    _, console, path = console_relay
    await console.sign_in(admin_token)
    before = path.read_text()

    status, text, _ = await console.post("sites/new", {"url": "http://shop.example.com",
                                                       "id": "shop"})
    bad_id, id_text, _ = await console.post("sites/new", {"url": "https://shop.example.com",
                                                          "id": "Shop Main"})

    assert 400 == status and 400 == bad_id
    assert re.search(r'id="f-url-error"[^>]*>[^<]*expected an https:// URL', text)
    assert 'id="f-id-error"' in id_text and 'id="f-url-error"' not in id_text
    assert before == path.read_text()


async def test_the_wizard_adds_a_site_shows_its_key_once_and_the_relay_learns_it_by_reload(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    shop = await partner_factory()

    key = await add_site(console, "shop", shop.url)
    await wait_until_known(console, "shop")
    later = [await console.get(p) for p in ("", "live", "setup/test?remote=shop",
                                            "sites/new")]

    config = load(path)
    assert ["shop"] == list(config.sites) and shop.url == config.sites["shop"].url
    assert "# the console's test relay" in path.read_text()  # the file keeps its comments
    assert key not in path.read_text()
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        stored = store.get("shop")
        assert stored is not None and key == stored.secret
    finally:
        store.close()
    await process.logged("relay_reloaded")
    for status, text, _ in later:
        assert 200 == status and not KEY.search(text)


async def test_next_stays_disabled_until_both_sites_pass_and_later_steps_send_back_to_the_test(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    key_a = await add_site(console, "a", a.url)
    await wait_until_known(console, "a")
    key_b = await add_site(console, "b", b.url, link_to="a")
    await wait_until_known(console, "b")
    a.site_id, a.relay_url, a.key = "a", process.url, secret_key(SiteKey(key_a))
    b.site_id, b.relay_url = "b", process.url  # b has no key yet: its test fails
    state = {"site": "a", "remote": "b"}

    _, untested, _ = await console.get("setup/test?site=a&remote=b")
    sent_back, _, resp = await console.request("GET", "setup/type?site=a&remote=b",
                                               redirects=False)
    _, failed, _ = await console.post("setup/test", state)
    b.key = secret_key(SiteKey(key_b))
    _, passed, _ = await console.post("setup/test", state)

    assert re.search(r'id="next"[^>]*disabled', untested)
    assert 303 == sent_back and "setup/test" in resp.headers["Location"]
    assert re.search(r'id="next"[^>]*disabled', failed)
    assert "Connection Test Failed" in failed and 'class="check-fail"' in failed
    assert not re.search(r'id="next"[^>]*disabled', passed), passed[:3000]
    assert passed.count("✔ Connection Test Successful") == 2 and "Status: Successful" in passed


async def test_the_wizard_starts_a_link_with_the_rules_chosen_and_shows_its_progress(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    keys = {"a": await add_site(console, "a", a.url)}
    await wait_until_known(console, "a")
    keys["b"] = await add_site(console, "b", b.url, link_to="a")
    await wait_until_known(console, "b")
    for partner, name in ((a, "a"), (b, "b")):
        partner.site_id, partner.relay_url = name, process.url
        partner.key = secret_key(SiteKey(keys[name]))
    await console.post("setup/test", {"site": "a", "remote": "b"})
    query = "site=a&remote=b&sync=users"

    _, kinds, _ = await console.get("setup/type?site=a&remote=b")
    _, rules, _ = await console.get(f"setup/rules?{query}")
    refused, delete_text, _ = await console.get(
        f"setup/direction?{query}&outgoing=none&outgoing=create&outgoing=delete")
    _, directions, _ = await console.get(
        f"setup/direction?{query}&outgoing=none&outgoing=create&outgoing=edit")
    _, summary, _ = await console.get(
        f"setup/start?{query}&outgoing=none&outgoing=create&outgoing=edit&direction=push")
    status, progress, resp = await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit")])

    assert re.search(r'id="sync-orders"[^>]*disabled', kinds) and "Coming soon" in kinds
    for action in ("create", "edit", "roles"):
        assert re.search(f'id="outgoing-{action}"[^>]*checked', rules)
    assert not re.search(r'id="outgoing-delete"[^>]*checked', rules)
    assert 400 == refused and 'id="delete-error"' in delete_text
    assert "Best for production → staging" in directions and "overwrite" in directions
    assert "Push to Remote" in summary
    assert 200 == status and str(resp.url).endswith("/console/links/a-b/progress")
    link = load(path).links["a-b"]
    assert ("push", {"create", "edit"}) == (link.direction, set(link.outgoing))
    await until(lambda: bool(process.lines) and any(
        line.get("event") == "relay_reloaded" and "a-b" in line.get("links", [])
        for line in process.lines))

    async def shown() -> bool:
        try:
            _, text, _ = await console.get("links/a-b/progress/live")
        except aiohttp.ClientError:
            return False
        return 'id="initial-sync"' in text and ": active" in text
    for _ in range(200):
        if await shown():
            break
        import asyncio
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the link's initial sync is not shown")


async def test_the_wizard_starts_a_link_with_the_roles_and_fields_chosen_and_no_initial_sync(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    query = "site=a&remote=b&sync=users&outgoing=none&outgoing=create&outgoing=edit"
    chosen = ("&roles_outgoing=customer,+subscriber&roles_incoming=customer"
              "&fields=none&fields=first_name&fields=email&initial_sync=off")

    _, rules, _ = await console.get(f"setup/rules?{query}")
    refused, refusal, _ = await console.get(f"setup/direction?{query}"
                                            "&roles_outgoing=Shop+Manager")
    _, summary, _ = await console.get(f"setup/start?{query}{chosen}&direction=push")
    status, _, resp = await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit"),
        ("roles_outgoing", "customer, subscriber"), ("roles_incoming", "customer"),
        ("fields", "none"), ("fields", "first_name"), ("fields", "email"),
        ("initial_sync", "off")])

    assert re.search(r'id="f-roles_outgoing"[^>]*value=""', rules)
    for field in ("first_name", "description", "email"):
        assert re.search(f'id="fields-{field}"[^>]*checked', rules)
    assert re.search(r'id="initial_sync-on"[^>]*checked', rules)
    assert 400 == refused
    assert re.search(r'id="f-roles_outgoing-error"[^>]*>[^<]*got &#39;Shop&#39;, '
                     r'&#39;Manager&#39;; expected role slugs', refusal)
    assert re.search(r'id="summary-roles_outgoing">customer, subscriber<', summary)
    assert 'id="summary-roles_incoming"' not in summary  # a push link takes nothing
    assert re.search(r'id="summary-fields">first_name, email<', summary)
    assert re.search(r'id="summary-initial_sync">off', summary)
    assert 200 == status and str(resp.url).endswith("/console/links/a-b/progress")
    link = load(path).links["a-b"]
    assert (frozenset({"customer", "subscriber"}), None) == (link.roles_outgoing,
                                                             link.roles_incoming)
    assert (frozenset({"first_name", "email"}), False) == (link.fields, link.initial_sync)


async def test_the_link_edit_form_sets_and_clears_the_roles_fields_and_initial_sync(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    added, _, _ = await console.post("setup/start", [("site", "a"), ("remote", "b"),
                                                     ("sync", "users"), ("direction", "push")])
    assert 200 == added
    await wait_for_link(console, "a-b")
    link_form = [("link", "a-b"), ("site", "a"), ("remote", "b"), ("sync", "users"),
                 ("outgoing", "none"), ("outgoing", "create"), ("outgoing", "edit"),
                 ("outgoing", "roles")]

    set_status, _, _ = await console.post("setup/start", [
        *link_form, ("direction", "bidirectional"), ("roles_outgoing", "customer"),
        ("roles_incoming", "subscriber"), ("fields", "none"), ("fields", "last_name"),
        ("initial_sync", "off")])
    edited = load(path).links["a-b"]
    await wait_for_link(console, "a-b")
    cleared_status, _, _ = await console.post("setup/start", [
        *link_form, ("direction", "push"), ("roles_outgoing", ""), ("initial_sync", "on")])
    cleared = load(path).links["a-b"]

    assert 200 == set_status and 200 == cleared_status
    assert ("bidirectional", frozenset({"customer"}), frozenset({"subscriber"})) == (
        edited.direction, edited.roles_outgoing, edited.roles_incoming)
    assert (frozenset({"last_name"}), False) == (edited.fields, edited.initial_sync)
    assert (None, None, True) == (cleared.roles_outgoing, cleared.roles_incoming,
                                  cleared.initial_sync)
    assert "roles" not in yaml.safe_load(path.read_text())["links"][0]


async def test_editing_a_link_shows_its_roles_fields_and_initial_sync_and_keeps_them(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    await two_tested_sites(console, process, partner_factory)
    await console.post("setup/start", [
        ("site", "a"), ("remote", "b"), ("sync", "users"), ("direction", "push"),
        ("roles_outgoing", "customer"), ("fields", "none"), ("fields", "email"),
        ("initial_sync", "off")])
    await wait_for_link(console, "a-b")

    _, form, _ = await console.get("links/a-b/edit")
    # The form shows what the file says, so sending it back unchanged changes nothing else.
    assert 'id="rules-kept"' not in form
    assert 'name="roles_outgoing" value="customer"' in form
    assert 'value="email" checked' in form and 'value="description" checked' not in form
    assert 'value="off" checked' in form
    status, _, _ = await console.post("setup/start", [
        ("link", "a-b"), ("site", "a"), ("remote", "b"), ("sync", "users"),
        ("direction", "push"), ("outgoing", "none"), ("outgoing", "create"),
        ("roles_outgoing", "customer"), ("fields", "none"), ("fields", "email"),
        ("initial_sync", "off")])

    assert 200 == status
    link = load(path).links["a-b"]
    assert frozenset({"create"}) == link.outgoing
    assert (frozenset({"customer"}), frozenset({"email"}), False) == (
        link.roles_outgoing, link.fields, link.initial_sync)


async def test_the_admin_api_adds_and_edits_a_link_and_refuses_one_between_untested_sites(
        console_relay: Any, admin_token: str, partner_factory: Any) -> None:
    process, console, path = console_relay
    await console.sign_in(admin_token)
    a, b = await partner_factory(), await partner_factory()
    await add_site(console, "a", a.url)
    await wait_until_known(console, "a")
    await add_site(console, "b", b.url)
    await wait_until_known(console, "b")
    headers = {"Authorization": f"Bearer {admin_token}"}
    api = console.base.replace("/console/", "/admin")

    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "push", "start": True}) as r:
            refused = r.status, await r.json()
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "sideways"}) as r:
            bad = r.status, await r.json()
        async with http.post(f"{api}/links", json={"site": "a", "remote": "b",
                                                   "direction": "push"}) as r:
            added = r.status, await r.json()
        await until(lambda: "a-b" in load(path).links)
        for _ in range(200):
            try:
                async with http.post(f"{api}/links/a-b/edit",
                                     json={"direction": "pull", "incoming": ["create"]}) as r:
                    edited = r.status, await r.json()
            except aiohttp.ClientError:  # the admin listener restarts with the reload
                edited = (0, None)
            if edited[0] not in (0, 404):
                break
            import asyncio
            await asyncio.sleep(0.05)

    assert 409 == refused[0] and refused[1]["missing"]
    assert "a-b" not in yaml.safe_load(path.read_text()).get("links", []) or added
    assert (400, "direction") == (bad[0], bad[1]["field"])
    assert 201 == added[0] and "started" == added[1]["reload"]
    assert 200 == edited[0], edited
    link = load(path).links["a-b"]
    assert ("pull", {"create"}) == (link.direction, set(link.incoming))
