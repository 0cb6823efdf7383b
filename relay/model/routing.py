"""Which partner sites get a change, and which of its actions: the rules, direction and loop guard.

A link is what a site admin set up for one remote site. A change made on ``source`` flows to
``target`` when every link describing that pair allows it:
- a link owned by ``source`` (site=source, remote=target) allows its *outgoing* actions if its
  direction is push or bidirectional, otherwise nothing;
- a link owned by ``target`` (site=target, remote=source) allows its *incoming* actions if its
  direction is pull or bidirectional, otherwise nothing.
With no link between the two, nothing flows. A change never goes back to the site it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from relay.config import Config, Link


@dataclass(frozen=True)
class Route:
    target: str
    link: str                # the link deliveries are accounted to (the source's, if it has one)
    actions: frozenset[str]  # what the target may receive
    match_by: str            # how the target finds the person on first contact
    #: The allow-lists of meta keys of the links between the two (each must allow a key).
    meta_keys: tuple[tuple[str, ...], ...] = ()
    #: No change flows back from the target (push or pull): the source wins over the target's
    #: own changes (docs/adr/0011-convergent-versions.md).
    one_way: bool = False


def allowed_by(link: Link, source: str, target: str) -> frozenset[str]:
    """What one link lets flow from ``source`` to ``target``."""
    if (link.site, link.remote) == (source, target):
        return link.outgoing if link.direction in ("push", "bidirectional") else frozenset()
    if (link.site, link.remote) == (target, source):
        return link.incoming if link.direction in ("pull", "bidirectional") else frozenset()
    return frozenset()


class Router:
    """Routes for every source site, computed once from the configuration."""

    def __init__(self, config: Config) -> None:
        self._routes: dict[str, list[Route]] = {}
        for source in config.sites:
            routes = []
            for target in config.sites:
                if target == source:
                    continue  # the loop guard's first rule
                links = [lk for lk in config.links.values()
                         if {lk.site, lk.remote} == {source, target}]
                if not links:
                    continue
                allowed = frozenset.intersection(*(allowed_by(lk, source, target)
                                                   for lk in links))
                if allowed:
                    owner = next((lk for lk in links if lk.site == source), links[0])
                    routes.append(Route(target, owner.id, allowed, owner.match_by, tuple(
                        lk.meta_keys for lk in links if lk.meta_keys is not None)))
            self._routes[source] = routes
        for source, routes in self._routes.items():
            self._routes[source] = [
                r if any(back.target == source for back in self._routes.get(r.target, []))
                else replace(r, one_way=True) for r in routes]

    def routes_from(self, source: str) -> list[Route]:
        return self._routes.get(source, [])

    def links_into(self, target: str) -> list[str]:
        """The links deliveries to ``target`` are accounted to."""
        return sorted({r.link for routes in self._routes.values() for r in routes
                       if r.target == target})
