"""Routing: which partner gets a change, by the links' rules and directions (README's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.model.routing import Router
from tests.relay_settings import settings, site

ALL = ["create", "edit", "delete", "password", "roles", "metadata"]


def router(tmp_path: Path, *links: dict[str, Any]) -> Router:
    sites = [site(s, f"http://127.0.0.1/{s}") for s in ("a", "b", "c")]
    return Router(settings(tmp_path, sites, list(links)))


def flows(r: Router, source: str, target: str) -> set[str]:
    return next((set(route.actions) for route in r.routes_from(source)
                 if route.target == target), set())


def link(site_: str, remote: str, direction: str, **rules: Any) -> dict[str, Any]:
    return {"id": f"{site_}-{remote}", "site": site_, "remote": remote, "direction": direction,
            **rules}


# (links, source, target, what flows)
CASES = [
    # One link, owned by a: push sends a's outgoing actions to b, nothing back.
    ([link("a", "b", "push")], "a", "b", {"create", "edit", "roles"}),
    ([link("a", "b", "push")], "b", "a", set()),
    # pull: the remote is the source; a receives its incoming actions.
    ([link("a", "b", "pull", incoming=["create", "delete"])], "b", "a", {"create", "delete"}),
    ([link("a", "b", "pull", incoming=["create", "delete"])], "a", "b", set()),
    # bidirectional: outgoing one way, incoming the other.
    ([link("a", "b", "bidirectional", outgoing=["edit"], incoming=["roles"])], "a", "b", {"edit"}),
    ([link("a", "b", "bidirectional", outgoing=["edit"], incoming=["roles"])], "b", "a", {"roles"}),
    # Omitted actions mean the recommended set.
    ([link("a", "b", "bidirectional")], "b", "a", {"create", "edit", "roles"}),
    # Both sides describe the pair: a change flows only if both allow it.
    ([link("a", "b", "push", outgoing=ALL), link("b", "a", "pull", incoming=["create", "edit"])],
     "a", "b", {"create", "edit"}),
    ([link("a", "b", "push", outgoing=ALL), link("b", "a", "push", outgoing=ALL)],
     "a", "b", set()),  # b's own link says b is the source: nothing from a
    ([link("a", "b", "bidirectional", outgoing=["edit", "password"]),
      link("b", "a", "bidirectional", incoming=["password", "roles"])], "a", "b", {"password"}),
    # No link between the two: nothing.
    ([link("a", "b", "push")], "a", "c", set()),
    ([link("a", "b", "push"), link("c", "a", "pull", incoming=ALL)], "a", "c", set(ALL)),
]


@pytest.mark.parametrize(("links", "source", "target", "expected"), CASES)
def test_a_change_flows_only_where_every_link_of_the_pair_allows_it(
        tmp_path: Path, links: list[dict[str, Any]], source: str, target: str,
        expected: set[str]) -> None:
    assert expected == flows(router(tmp_path, *links), source, target)


def test_a_change_never_routes_back_to_the_site_it_came_from(tmp_path: Path) -> None:
    r = router(tmp_path, link("a", "b", "bidirectional"), link("a", "c", "bidirectional"))

    assert [] == [route for route in r.routes_from("a") if route.target == "a"]
    assert {"b", "c"} == {route.target for route in r.routes_from("a")}


def test_deliveries_are_accounted_to_the_sources_link_and_its_matching(tmp_path: Path) -> None:
    r = router(tmp_path, link("a", "b", "push", match_by="login"),
               link("b", "a", "pull"))

    (route,) = r.routes_from("a")
    assert ("a-b", "login") == (route.link, route.match_by)
