"""The convergence rule (relay/model/versions.py and the plugin's class-userrelay-versions.php): how
changes are ordered, merged and applied, and that any order of delivery ends in one state."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.model import versions
from relay.model.for_target import merge_updates

PHP_CLASS = (Path(__file__).resolve().parents[1] / "plugin-stub" / "userrelay" / "includes"
             / "class-userrelay-versions.php")


def test_versions_order_by_clock_then_counter_then_site() -> None:
    ordered = ["0.0@", "999.5@z", "1000.0@a", "1000.0@b", "1000.1@a", "1001.0@a"]
    assert ordered == sorted(ordered, key=versions.key)


def test_a_tie_of_clock_and_counter_goes_to_the_site_id_the_same_everywhere() -> None:
    assert "1000.0@site-b" == versions.newer("1000.0@site-a", "1000.0@site-b")
    assert "1000.0@site-b" == versions.newer("1000.0@site-b", "1000.0@site-a")


def test_a_malformed_or_missing_version_is_the_oldest() -> None:
    assert "5.0@a" == versions.newer(None, "5.0@a") == versions.newer("garbage", "5.0@a")


def test_the_clock_passes_a_version_from_a_site_whose_clock_is_ahead() -> None:
    # Site b's clock is 90 s behind a's: having seen a's change, b's next change is still newer.
    seen_from_a = versions.tick(None, 1_000_090_000, "a")
    mine = versions.tick(seen_from_a, 1_000_000_000, "b")
    assert versions.key(mine) > versions.key(seen_from_a)
    assert "1000090000.1@b" == mine


def test_the_clock_follows_the_physical_clock_when_it_is_ahead() -> None:
    assert "2000.0@a" == versions.tick("1000.7@b", 2000, "a")


def test_a_delivery_writes_only_the_groups_it_holds_newer() -> None:
    stored = {"profile": "200.0@b", "email": "50.0@a", "meta:*": "10.0@a"}
    delivered = {"profile": "100.0@a", "email": "150.0@a", "meta:colour": "20.0@a"}
    apply, skip = versions.decide(["profile", "email", "meta:colour"], delivered, stored)
    assert (["email", "meta:colour"], ["profile"]) == (apply, skip)


def test_a_delivery_holding_what_the_site_holds_is_skipped() -> None:
    assert ([], ["roles"]) == versions.decide(["roles"], {"roles": "5.0@a"}, {"roles": "5.0@a"})


def test_a_version_never_moves_backwards_when_recorded() -> None:
    recorded = versions.record({"profile": "300.0@b"}, ["profile", "email"],
                               {"profile": "100.0@a", "email": "100.0@a"})
    assert {"profile": "300.0@b", "email": "100.0@a"} == recorded


def test_from_the_source_of_a_one_way_link_only_its_own_newer_change_stops_a_delivery() -> None:
    stored = {"profile": "900.0@target", "roles": "900.0@source"}
    delivered = {"profile": "100.0@source", "roles": "100.0@source"}
    assert (["profile"], ["roles"]) == versions.decide(["profile", "roles"], delivered, stored,
                                                       source_wins=True)


def _update(origin: str, event: str, user: dict[str, Any], vs: dict[str, str]) -> dict[str, Any]:
    return {"origin": {"site": origin, "event_id": event}, "actions": ["edit", "metadata"],
            "user": {"login": "ada", "email": "ada@example.test", **user}, "versions": vs}


def test_merging_pending_updates_keeps_the_newer_change_of_each_group() -> None:
    earlier = _update("a", "e1", {"first_name": "New", "meta": {"k": "a"}, "meta_deleted": []},
                      {"profile": "500.0@a", "email": "1.0@a", "meta:k": "500.0@a"})
    later = _update("c", "e2", {"first_name": "Old", "email": "c@example.test", "meta": {},
                                "meta_deleted": ["k"]},
                    {"profile": "100.0@c", "email": "100.0@c", "meta:k": "100.0@c"})
    merged = merge_updates(earlier, later)
    assert ("New", "c@example.test", {"k": "a"}, []) == (
        merged["user"]["first_name"], merged["user"]["email"], merged["user"]["meta"],
        merged["user"]["meta_deleted"])
    assert {"profile": "500.0@a", "email": "100.0@c", "meta:k": "500.0@a"} == merged["versions"]


def test_merging_with_a_payload_without_versions_keeps_the_later_and_no_versions() -> None:
    earlier = _update("a", "e1", {"first_name": "First"}, {"profile": "900.0@a"})
    later = _update("a", "e2", {"first_name": "Second"}, {})
    del later["versions"]
    merged = merge_updates(earlier, later)
    assert ("Second", None) == (merged["user"]["first_name"], merged.get("versions"))


# --- the plugin holds the same rule --------------------------------------------------------

def _php(calls: list[list[Any]]) -> list[Any]:
    """Runs UserRelay_Versions' pure functions with php-cli: [name, *args] each."""
    if shutil.which("php") is None:
        pytest.fail("php-cli is needed to check the plugin's rule (apt-get install php-cli)")
    script = ("define('ABSPATH', '/'); require " + json.dumps(str(PHP_CLASS)) + ";"
              "$out = []; foreach (json_decode(stream_get_contents(STDIN), true) as $c) {"
              " $f = array_shift($c); $out[] = UserRelay_Versions::$f(...$c); }"
              " echo json_encode($out);")
    done = subprocess.run(["php", "-r", script], input=json.dumps(calls), capture_output=True,
                          text=True, check=True, timeout=60)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


VERSION = st.builds(lambda ms, c, s: f"{ms}.{c}@{s}", st.integers(0, 3), st.integers(0, 2),
                    st.sampled_from(["", "a", "b", "site-a"]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(VERSION, VERSION), min_size=1, max_size=40),
       st.integers(0, 5), st.booleans())
def test_the_plugin_orders_and_decides_as_the_relay(pairs: list[tuple[str, str]], now: int,
                                                     source_wins: bool) -> None:
    calls: list[list[Any]] = []
    for a, b in pairs:
        calls += [["compare", a, b], ["tick", a, now, "b"],
                  ["decide", ["g"], {"g": a}, {"g": b}, {}, source_wins]]
    got = _php(calls)
    expected: list[Any] = []
    for a, b in pairs:
        ka, kb = versions.key(a), versions.key(b)
        apply, skip = versions.decide(["g"], {"g": a}, {"g": b}, source_wins)
        expected += [(ka > kb) - (ka < kb), versions.tick(a, now, "b"),
                     {"apply": apply, "skip": skip}]
    assert expected == got


def test_the_plugin_orders_a_delete_and_a_re_creation_by_the_same_rule() -> None:
    # A delete applies unless the account there was created after it; a create or an edit
    # of a person deleted there applies only to an account created after the delete.
    assert [True, False, False, True] == _php([
        ["delete_applies", "100.0@b", "200.0@a"], ["delete_applies", "300.0@b", "200.0@a"],
        ["revives", "100.0@a", "200.0@b"], ["revives", "300.0@a", "200.0@b"]])


# --- any interleaving of the same changes ends in one state ---------------------------------

GROUPS = ("profile", "email", "roles", "meta:k")


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Changes stamped by two sites (b's clock 90 s behind a's, so concurrent changes are
    ordered by the skewed clocks), and for each site an order in which the other's reach it
    (with repeats: a dead letter replayed)."""
    changes = []
    clocks = {"a": "0.0@", "b": "0.0@"}
    physical = {"a": 90_000, "b": 0}
    for n in range(draw(st.integers(1, 12))):
        site = draw(st.sampled_from("ab"))
        physical[site] += draw(st.integers(0, 2000))
        if draw(st.booleans()):  # this site had received everything the other made so far
            clocks[site] = versions.newer(clocks[site], clocks["b" if site == "a" else "a"])
        clocks[site] = versions.tick(clocks[site], physical[site], site)
        changes.append({"site": site, "group": draw(st.sampled_from(GROUPS)),
                        "value": f"v{n}", "version": clocks[site]})
    orders = []
    for site in "ab":
        theirs = [i for i, c in enumerate(changes) if c["site"] != site]
        order = draw(st.permutations(theirs))
        orders.append(list(order) + draw(st.lists(st.sampled_from(theirs), max_size=3))
                      if theirs else [])
    return changes, orders


def _delivery(change: dict[str, Any], n: int) -> dict[str, Any]:
    group = change["group"]
    user: dict[str, Any] = {"login": "ada", "email": "ada@example.test", "meta": {},
                            "meta_deleted": []}
    if group == "meta:k":
        user["meta"] = {"k": change["value"]}
    elif group == "profile":
        user["first_name"] = change["value"]
    elif group == "roles":
        user["roles"] = [change["value"]]
    else:
        user["email"] = change["value"]
    return {"origin": {"site": change["site"], "event_id": str(n)},
            "actions": ["edit", "roles", "metadata"], "user": user,
            "versions": {group: change["version"]}}


def _value(user: dict[str, Any], group: str) -> Any:
    return {"profile": user.get("first_name"), "email": user["email"],
            "roles": (user.get("roles") or [None])[0],
            "meta:k": user.get("meta", {}).get("k")}[group]


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_any_interleaving_of_the_same_changes_ends_in_the_same_state(
        history: tuple[list[dict[str, Any]], list[list[int]]], data: st.DataObject) -> None:
    changes, orders = history
    ends = []
    for site, order in zip("ab", orders, strict=True):
        state: dict[str, Any] = dict.fromkeys(GROUPS)
        held: dict[str, str] = {}
        for change in (c for c in changes if c["site"] == site):  # made here, in order
            state[change["group"]], held[change["group"]] = change["value"], change["version"]
        pending = [_delivery(changes[i], i) for i in order]
        while pending:  # the relay folds some unsent updates together, in line order
            delivery = pending.pop(0)
            fold: bool = data.draw(st.booleans(), label="fold")
            if pending and fold:
                delivery = merge_updates(delivery, pending.pop(0))
            groups = [g for g in GROUPS if g in delivery["versions"]]
            apply, _ = versions.decide(groups, delivery["versions"], held)
            for group in apply:
                state[group] = _value(delivery["user"], group)
            held = versions.record(held, apply, delivery["versions"])
        ends.append(state)
    newest = {g: max((c for c in changes if c["group"] == g),
                     key=lambda c: versions.key(c["version"]))["value"]
              if any(c["group"] == g for c in changes) else None for g in GROUPS}
    assert newest == ends[0] == ends[1]
