"""Who and what a link syncs: its role rules (outgoing, judged by the user's roles on the
source; incoming, the roles the link's site accepts), its profile fields, and whether it begins
with an initial sync. A filtered change is counted and named, never queued; a person who enters
the roles is sent whole as a create; one who leaves is no longer sent, and nothing is deleted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.cli.main import main
from relay.db import status
from relay.errors import ConfigError
from tests.partner import Partner
from tests.relay_settings import settings, site
from tests.support import Relay, event, secret

EVERYTHING = ["create", "edit", "delete", "password", "roles", "metadata"]


@pytest.fixture
async def linked(partner_factory: Any, relay_factory: Any, tmp_path: Path) -> Any:
    """Site ``a`` (sending only) and site ``b`` (a partner), with the links given (``a-b``
    pushes everything unless told otherwise); returns (relay, b)."""
    async def make(*links: dict[str, Any]) -> tuple[Relay, Partner]:
        b = await partner_factory()
        config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                          list(links) or [push()])
        relay = await relay_factory(config)
        b.key, b.site_id, b.relay_url = relay.keys["b"], "b", relay.url
        return relay, b
    return make


def push(**rules: Any) -> dict[str, Any]:
    return {"id": "a-b", "site": "a", "remote": "b", "direction": "push",
            "outgoing": EVERYTHING, **rules}


def change(event_id: str, user_id: int, roles: list[str] | None, actions: list[str] | None = None,
           **user: Any) -> dict[str, Any]:
    """An edit as a current plugin reports it: ``user.roles`` in every event (None: an older
    plugin's event, without them)."""
    e = event(event_id, user_id, actions or ["edit"], **user)
    if roles is None:
        e["user"].pop("roles", None)
    else:
        e["user"]["roles"] = roles
    return e


def whole(event_id: str, user_id: int, roles: list[str]) -> dict[str, Any]:
    """A role change, carrying the user whole (docs/protocol.md)."""
    e = change(event_id, user_id, roles, ["roles"], first_name="Ann", last_name="Smith",
               nickname="ann", url="https://ann.example", description="bio", locale="en_GB",
               password_hash=secret(f"$P$Bwholehash{user_id:020d}"),
               meta={"billing_city": "Oslo"})
    e["whole"] = True
    return e


def queued(relay: Relay) -> list[tuple[Any, ...]]:
    return relay.db("SELECT event_id, target, kind FROM deliveries ORDER BY id")


async def test_a_user_outside_the_outgoing_roles_is_not_queued_and_the_answer_says_why(
        linked: Any) -> None:
    relay, _ = await linked(push(roles={"outgoing": ["customer", "subscriber"]}))

    status_code, answer = await relay.post("a", [change("e1", 1, ["editor"])])

    assert 202 == status_code
    assert 0 == answer["deliveries"]
    assert [{"event": "e1", "target": "b", "link": "a-b", "rule": "roles.outgoing",
             "reason": "roles editor not among customer, subscriber"}] == answer["filtered"]
    assert [] == queued(relay)


async def test_a_user_within_the_roles_is_sent_with_only_the_roles_the_link_syncs(
        linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer", "subscriber"]}))

    _, answer = await relay.post("a", [change("e1", 1, ["customer", "shop_manager"],
                                              ["edit", "roles"])])
    await b.wait_for(lambda: len(b.events) == 1)

    assert ([], 1) == (answer["filtered"], answer["deliveries"])
    assert ["customer"] == b.events[0]["user"]["roles"]


async def test_the_incoming_roles_of_the_targets_link_filter_what_it_accepts(
        linked: Any) -> None:
    relay, b = await linked(
        push(),
        {"id": "b-a", "site": "b", "remote": "a", "direction": "pull", "incoming": EVERYTHING,
         "roles": {"incoming": ["customer"]}})

    _, answer = await relay.post("a", [change("e1", 1, ["subscriber"]),
                                       change("e2", 2, ["customer"])])
    await b.wait_for(lambda: len(b.events) == 1)

    assert [("e1", "b-a", "roles.incoming")] == [
        (f["event"], f["link"], f["rule"]) for f in answer["filtered"]]
    assert ["e2"] == [e["origin"]["event_id"] for e in b.events]


async def test_a_user_who_enters_the_roles_is_sent_whole_as_a_create(linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))
    await relay.post("a", [change("e1", 1, ["editor"])])

    _, answer = await relay.post("a", [whole("e2", 1, ["customer"])])
    await b.wait_for(lambda: len(b.events) == 1)

    [sent] = b.events
    assert (["create", "password", "roles", "metadata"], True, True) == (
        sent["actions"], sent["whole"], sent["create_missing"])
    assert {"first_name": "Ann", "description": "bio", "locale": "en_GB",
            "roles": ["customer"], "meta": {"billing_city": "Oslo"}}.items() <= sent["user"].items()
    assert "password_hash" in sent["user"]
    assert 1 == answer["deliveries"]


async def test_a_user_who_leaves_the_roles_is_no_longer_sent_and_nothing_is_deleted(
        linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))
    await relay.post("a", [change("e1", 1, ["customer"])])
    await b.wait_for(lambda: len(b.events) == 1)

    _, left = await relay.post("a", [whole("e2", 1, ["editor"])])
    _, later = await relay.post("a", [change("e3", 1, ["editor"])])

    assert (["e2"], ["e3"]) == ([f["event"] for f in left["filtered"]],
                                [f["event"] for f in later["filtered"]])
    assert [("e1", "b", "update")] == queued(relay)  # no delete, no later change
    assert [(0,)] == relay.db("SELECT in_scope FROM link_scope WHERE link = 'a-b'")


async def test_a_user_who_comes_back_within_the_roles_is_sent_whole_again(linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))
    await relay.post("a", [change("e1", 1, ["customer"])])
    await relay.post("a", [whole("e2", 1, ["editor"])])

    await relay.post("a", [whole("e3", 1, ["customer"])])
    await b.wait_for(lambda: len(b.events) == 2)

    assert [["edit"], ["create", "password", "roles", "metadata"]] == [
        e["actions"] for e in b.events]


async def test_an_event_without_roles_from_an_older_plugin_is_let_through_and_counted(
        linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))

    _, answer = await relay.post("a", [change("e1", 1, None)])
    await b.wait_for(lambda: len(b.events) == 1)

    assert (1, [], 1) == (answer["unjudged"], answer["filtered"], answer["deliveries"])
    assert [("a-b", "unjudged", 1)] == relay.db("SELECT link, rule, count FROM filter_counts")


async def test_a_link_without_role_rules_sends_every_user_as_before(linked: Any) -> None:
    relay, b = await linked(push())

    _, answer = await relay.post("a", [change("e1", 1, ["editor"]), change("e2", 2, None)])
    await b.wait_for(lambda: len(b.events) == 2)

    assert (0, [], 2) == (answer["unjudged"], answer["filtered"], answer["deliveries"])
    assert [] == relay.db("SELECT * FROM link_scope")


async def test_a_profile_field_the_link_does_not_carry_is_left_out(linked: Any) -> None:
    relay, b = await linked(push(fields=["first_name", "last_name", "email"]))

    await relay.post("a", [change("e1", 1, ["customer"], description="bio", first_name="Ann")])
    await b.wait_for(lambda: len(b.events) == 1)

    user = b.events[0]["user"]
    assert ("Ann", False, False) == (user["first_name"], "description" in user,
                                     "display_name" in user)
    assert "keep" not in b.events[0]


async def test_an_email_the_link_does_not_carry_travels_to_match_and_is_marked_kept(
        linked: Any) -> None:
    relay, b = await linked(push(fields=["first_name"]))
    e = change("e1", 1, ["customer"], first_name="Ann")
    e["versions"] = {"profile": "1764250000125.0@a", "email": "1764250000125.0@a"}

    await relay.post("a", [e])
    await b.wait_for(lambda: len(b.events) == 1)

    [sent] = b.events
    assert ("user1@example.test", ["email"]) == (sent["user"]["email"], sent["keep"])
    assert "email" not in sent["versions"] and "profile" in sent["versions"]


async def test_a_resend_is_a_create_of_everything_the_link_allows_by_its_rules(
        linked: Any) -> None:
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))
    e = whole("e1", 1, ["customer"])
    e.update(actions=["create", "edit", "password", "roles", "metadata"], resend=True)
    refused = whole("e2", 2, ["editor"])
    refused.update(actions=["create", "edit", "password", "roles", "metadata"], resend=True)

    status_code, answer = await relay.post("a", [e, refused])
    await b.wait_for(lambda: len(b.events) == 1)

    assert (202, ["e2"]) == (status_code, [f["event"] for f in answer["filtered"]])
    [sent] = b.events
    assert (["create", "password", "roles", "metadata"], True, True) == (
        sent["actions"], sent["resend"], sent["whole"])


async def test_create_and_edit_together_are_still_refused_outside_a_resend(linked: Any) -> None:
    relay, _ = await linked(push())

    status_code, answer = await relay.post("a", [change("e1", 1, ["customer"],
                                                        ["create", "edit"])])

    assert (400, "events[0].actions") == (status_code, answer["error"].split(":")[0])


async def test_filtered_changes_are_counted_per_link_and_rule_in_status_and_metrics(
        linked: Any) -> None:
    relay, _ = await linked(push(roles={"outgoing": ["customer"]}))
    await relay.post("a", [change("e1", 1, ["editor"]), change("e2", 2, ["author"])])

    with sqlite3.connect(relay.config.database_path) as conn:
        snapshot = status.snapshot(conn, relay.config)
    metrics = await (await relay.client.get("/metrics")).text()

    assert {"roles.outgoing": 2} == snapshot["links"]["a-b"]["filtered"]
    assert "filtered roles.outgoing: 2" in status.render(snapshot)
    assert 'userrelay_filtered_total{link="a-b",rule="roles.outgoing"} 2.0' in metrics


async def test_a_link_with_initial_sync_false_sends_no_existing_users_when_started(
        linked: Any) -> None:
    relay, _ = await linked(push(initial_sync=False))

    assert [] == relay.db("SELECT link FROM backfills")
    assert [("a-b", 1)] == relay.db("SELECT link, started FROM link_states")


@pytest.mark.parametrize(("rules", "expected"), [
    ({"roles": {"outgoing": ["Customer"]}}, "links[0] (a-b).roles.outgoing: got 'Customer'; "
     "expected role slugs"),
    ({"roles": {"outgoing": []}}, "links[0] (a-b).roles.outgoing: got []; expected a non-empty "
     "list of role slugs"),
    ({"roles": ["customer"]}, "links[0] (a-b).roles: got ['customer']; expected a mapping"),
    ({"roles": {"outgoing": ["customer"], "incomng": ["x"]}}, "links[0] (a-b).roles: got"),
    ({"roles": {"incoming": ["customer"]}}, "links[0] (a-b).roles.incoming: a push link has "
     "no incoming changes to filter"),
    ({"fields": ["first_name", "bio"]}, "links[0] (a-b).fields: got 'bio'; expected a list "
     "drawn from first_name, last_name"),
    ({"initial_sync": "no"}, "links[0] (a-b).initial_sync: got 'no'; expected true"),
])
def test_a_mistaken_rule_is_named_with_what_is_expected(tmp_path: Path, rules: dict[str, Any],
                                                        expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", "http://127.0.0.1:8")],
                 [push(**rules)])

    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_check_config_accepts_the_rules_and_the_cli_lists_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "database": str(tmp_path / "r.sqlite3"),
        "sites": [site("a", "http://127.0.0.1:9"), site("b", "http://127.0.0.1:8")],
        "links": [push(roles={"outgoing": ["customer"]}, fields=["first_name", "email"],
                       initial_sync=False)]}))

    assert 0 == main(["links", "list", "--config", str(path)])
    out = capsys.readouterr().out

    assert "roles outgoing: customer" in out and "fields: email, first_name" in out
    assert "initial sync: off" in out


async def test_sites_test_and_check_config_name_a_role_the_site_lacks(linked: Any) -> None:
    from relay.config import load
    from tests.relay_settings import config_file
    from tests.support import run_cli
    from tests.test_connection_test import connection_test
    relay, b = await linked(push(roles={"outgoing": ["customr", "subscriber"]}))
    b.roles = [{"slug": "customer", "name": "Customer"},
               {"slug": "subscriber", "name": "Subscriber"}]

    report = await connection_test(relay.config, "b")
    path = config_file(relay.config, relay.config.base_dir / "config.yaml")
    out = run_cli("check-config", str(path)).stdout

    check = report.check("roles")
    assert check is not None and "warn" == check.status
    said = ("link a-b roles.outgoing: customr: site 'b' has no such role (did you mean "
            "customer?); it has customer, subscriber")
    assert said == check.detail
    assert f"warning: {said}" in out
    assert frozenset({"customr", "subscriber"}) == load(str(path)).links["a-b"].roles_outgoing


async def test_a_plugin_that_lists_no_roles_is_told_to_update(linked: Any) -> None:
    from tests.test_connection_test import connection_test
    relay, b = await linked(push(roles={"outgoing": ["customer"]}))
    b.roles = None

    report = await connection_test(relay.config, "b")

    check = report.check("roles")
    assert check is not None and ("warn", "update the plugin on the site") == (
        check.status, check.fix)
    assert report.passed


def test_links_edit_sets_and_clears_the_roles_fields_and_initial_sync(tmp_path: Path) -> None:
    import shutil

    from relay import config as config_module
    from tests.cli_run import userrelay
    path = tmp_path / "relay.yaml"
    shutil.copy(Path(__file__).resolve().parent.parent / "config.example.yaml", path)

    set_ = userrelay("links", "edit", "shop-to-branch", "--roles-outgoing", "customer,subscriber",
                     "--fields", "first_name,last_name,email", "--initial-sync", "false",
                     "--config", path)
    link = config_module.load(path).links["shop-to-branch"]
    bad = userrelay("links", "edit", "shop-to-branch", "--roles-outgoing", "Shop Manager",
                    "--config", path)
    cleared = userrelay("links", "edit", "shop-to-branch", "--roles-outgoing", "all",
                        "--fields", "all", "--initial-sync", "true", "--config", path)
    after = config_module.load(path).links["shop-to-branch"]

    assert 0 == set_.code, set_.err
    assert (frozenset({"customer", "subscriber"}), frozenset({"first_name", "last_name",
                                                              "email"}), False) == (
        link.roles_outgoing, link.fields, link.initial_sync)
    assert 1 == bad.code and "roles.outgoing: got 'Shop', 'Manager'" in bad.err
    assert 0 == cleared.code, cleared.err
    assert (None, True) == (after.roles_outgoing, after.initial_sync)
