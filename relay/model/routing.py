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

from collections.abc import Iterable
from dataclasses import dataclass, replace

from relay.config import Config, Link
from relay.constants import LINK_FIELDS


@dataclass(frozen=True)
class RoleRule:
    """One list of a link's ``roles``: a person is within it when they hold one of ``roles``."""

    link: str
    rule: str                 # roles.outgoing (the source's link) or roles.incoming (the target's)
    roles: frozenset[str]

    def refuses(self, held: Iterable[str]) -> str | None:
        """Why a person holding ``held`` (their roles on the source) is outside, or None."""
        held = sorted(set(held))
        if self.roles & set(held):
            return None
        return (f"roles {', '.join(held) or '(none)'} not among "
                f"{', '.join(sorted(self.roles))}")


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
    #: The role rules of the links between the two (each must let the person in).
    role_rules: tuple[RoleRule, ...] = ()
    #: The profile fields (and email) every link between the two carries.
    fields: frozenset[str] = frozenset(LINK_FIELDS)

    def outside(self, held: Iterable[str]) -> tuple[RoleRule, str] | None:
        """The first rule a person holding ``held`` is outside of, and why; None: within all."""
        held = list(held)
        for rule in self.role_rules:
            why = rule.refuses(held)
            if why is not None:
                return rule, why
        return None

    def roles_kept(self, held: Iterable[str]) -> list[str]:
        """The roles a target receives: those every rule names (all of them without rules)."""
        return [r for r in held if all(r in rule.roles for rule in self.role_rules)]


def role_rules(link: Link, source: str, target: str) -> tuple[RoleRule, ...]:
    """The role rules one link sets on changes from ``source`` to ``target``."""
    if (link.site, link.remote) == (source, target) and link.roles_outgoing is not None:
        return (RoleRule(link.id, "roles.outgoing", link.roles_outgoing),)
    if (link.site, link.remote) == (target, source) and link.roles_incoming is not None:
        return (RoleRule(link.id, "roles.incoming", link.roles_incoming),)
    return ()


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
                    routes.append(Route(
                        target, owner.id, allowed, owner.match_by,
                        tuple(lk.meta_keys for lk in links if lk.meta_keys is not None),
                        role_rules=tuple(r for lk in links
                                         for r in role_rules(lk, source, target)),
                        fields=frozenset.intersection(*(lk.fields for lk in links))))
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
