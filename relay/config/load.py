"""Loading a configuration file: YAML read, every setting, site and link validated.

Loading collects every problem it finds and raises one ``ConfigError`` that names, for each,
the key path, the bad value and what was expected. It never lets a traceback reach the user.
The sites are read in relay/config/load_sites.py, the links here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from relay.config import link_rules, protected_meta
from relay.config import yaml_doc as config_yaml
from relay.config.load_sites import got, read_sites, unknown_keys
from relay.config.load_sites import is_loopback as is_loopback  # the package's, from here
from relay.config.sections import (
    ID_PATTERN,
    SECTION_ALIASES,
    SECTIONS,
    SETTINGS,
    Config,
    Link,
    Site,
    default_database,
    parse_duration,
)
from relay.constants import (
    ACTIONS,
    DIRECTIONS,
    MATCH_BY,
    RECOMMENDED_ACTIONS,
    SYNC_TYPES_PLANNED,
    SYNC_TYPES_SUPPORTED,
)
from relay.errors import ConfigError

#: The database of a configuration that names none, before it was named after the file.
LEGACY_DATABASE = "var/userrelay.sqlite3"


def load(path: str | Path) -> Config:
    """Read and validate a YAML configuration file; every problem is a ``ConfigError``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a folder, not a configuration file"]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileNotFoundError):
            reason += (f" (in {Path.cwd()}; give the file with --config FILE, or set "
                       "USERRELAY_CONFIG)")
        raise ConfigError(str(path), [f"cannot read the file: {reason}"]) from None
    document = config_yaml.parse(raw, str(path))
    config = from_text_document(document, source=str(path), base_dir=path.resolve().parent)
    problems = legacy_database(config)
    if problems:
        raise ConfigError(config.source, problems)
    return config


def legacy_database(config: Config) -> list[str]:
    """A configuration naming no database, beside the file earlier versions used by default:
    which one is its own is the operator's to say (nothing is moved, nothing created)."""
    if config.files.database or config.source.startswith("<"):
        return []
    legacy = config.base_dir / LEGACY_DATABASE
    if config.database_path.exists() or not legacy.exists():
        return []
    return [f"database: not set, so this configuration's database is "
            f"{default_database(config.source)} (named after the file), which does not exist "
            f"yet; {legacy} exists, the default of earlier versions. If it holds this "
            f"configuration's data, add `database: {LEGACY_DATABASE}` to {config.source}; "
            f"if it is another configuration's, add `database: "
            f"{default_database(config.source)}` to start a new one"]


def from_text_document(document: Any, source: str, base_dir: Path) -> Config:
    """A parsed file's document validated: an empty file is an error, not a default relay."""
    if document is None:
        raise ConfigError(source, ["the file holds no settings; start from "
                                   "config.example.yaml, or let `userrelay sites add "
                                   f"--config {source}` write it"])
    return from_mapping(document, source=source, base_dir=base_dir)


def from_mapping(document: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate an already parsed document; every problem is reported at once."""
    problems: list[str] = []
    notes: list[str] = []
    if not isinstance(document, dict):
        raise ConfigError(source, [f"the top level must be a mapping of settings (key: value "
                                   f"lines), not {type(document).__name__} {document!r:.60}"])
    document = _renamed(document, source, problems, notes)
    try:
        values = _read_settings(document, problems)
        sites = read_sites(document.get("sites"), problems, base_dir or Path.cwd())
        links = _read_links(document.get("links"), sites, problems)
    except (TypeError, ValueError, RecursionError) as exc:
        # A shape no check above foresaw: still one clear error, never a traceback.
        raise ConfigError(source, [*problems, f"cannot be read: {exc}"]) from None
    known = {s.key.split(".")[0] for s in SETTINGS} | {"sites", "links"}
    for key in document:
        if key not in known:
            problems.append(f"{key}: unknown setting; expected one of {', '.join(sorted(known))}")
    if problems:
        raise ConfigError(source, problems)
    sections = {head or "files": section(**{f.name: values[_key(head, f.name)]
                                            for f in fields(section)})
                for head, section in SECTIONS.items()}
    return Config(source, base_dir or Path.cwd(), sites=sites, links=links, notes=tuple(notes),
                  **sections)


def _key(head: str, name: str) -> str:
    return f"{head}.{name}" if head else name


def _renamed(document: dict[str, Any], source: str, problems: list[str], notes: list[str]
             ) -> dict[str, Any]:
    """The document with sections of earlier versions under their new names, each noted."""
    for old, new in SECTION_ALIASES.items():
        if old not in document:
            continue
        if new in document:
            problems.append(f"{old}: the same section as {new} (its name before this version); "
                            f"keep only {new}")
            continue
        document = {(new if key == old else key): value for key, value in document.items()}
        notes.append(f"{old}: now called {new}; the old name still works, but rename it in "
                     f"{source}")
    return document


def _lookup(document: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _read_settings(document: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    sections: dict[str, set[str]] = {}
    for setting in SETTINGS:
        head, _, tail = setting.key.partition(".")
        if tail:
            sections.setdefault(head, set()).add(tail)
        present, raw = _lookup(document, setting.key)
        if not present:
            values[setting.key] = setting.default
            continue
        try:
            values[setting.key] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{setting.key}: got {raw!r}; expected {exc}")
            values[setting.key] = setting.default
    for head, tails in sections.items():
        section = document.get(head)
        if section is None:
            continue
        if not isinstance(section, dict):
            problems.append(f"{head}: got {section!r}; expected a mapping")
            continue
        for key in section:
            if key not in tails:
                problems.append(f"{head}.{key}: unknown setting; expected one of "
                                f"{', '.join(sorted(tails))}")
    lease, timeout = values["delivery.lease"], values["delivery.timeout"]
    if lease <= timeout:
        problems.append(f"delivery.lease: got {lease:g}s; expected more than "
                        f"delivery.timeout ({timeout:g}s)")
    return values


def _actions(raw: Any, where: str, problems: list[str]) -> frozenset[str]:
    if raw is None:
        return frozenset(RECOMMENDED_ACTIONS)
    if not isinstance(raw, list) or any(a not in ACTIONS for a in raw):
        problems.append(f"{where}: got {raw!r}; expected a list drawn from {', '.join(ACTIONS)}")
        return frozenset()
    return frozenset(raw)


def _reconcile(raw: Any, where: str, problems: list[str]) -> tuple[float | None, bool]:
    """A link's ``reconcile: {every: 6h | off, repair: false}`` (relay/work/reconcile.py)."""
    if raw is None:
        return None, False
    if not isinstance(raw, dict) or set(raw) - {"every", "repair"}:
        problems.append(f"{where}: got {raw!r}; expected a mapping such as "
                        "{every: 6h, repair: false}")
        return None, False
    every: float | None = None
    if raw.get("every", "off") not in ("off", False):  # YAML reads a bare off as false
        try:
            every = parse_duration(raw["every"])
        except ValueError as exc:
            problems.append(f"{where}.every: got {raw['every']!r}; expected off or {exc}")
        else:
            if every < 60:
                problems.append(f"{where}.every: got {raw['every']!r}; expected off or at "
                                "least a minute")
                every = None
    repair = raw.get("repair", False)
    if not isinstance(repair, bool):
        problems.append(f"{where}.repair: got {repair!r}; expected true or false")
        repair = False
    return every, repair


def _read_links(raw: Any, sites: dict[str, Site], problems: list[str]) -> dict[str, Link]:
    links: dict[str, Link] = {}
    if raw is None:
        return links
    if not isinstance(raw, list):
        problems.append(f"links: got {raw!r}; expected a list of links")
        return links
    fields = {"id", "site", "remote", "sync", "direction", "incoming", "outgoing", "match_by",
              "reconcile", "meta_keys", "roles", "fields", "initial_sync"}
    for i, item in enumerate(raw):
        where = f"links[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: got {item!r}; expected a mapping")
            continue
        link_id = item.get("id")
        if not isinstance(link_id, str) or not ID_PATTERN.match(link_id):
            problems.append(f"{where}.id: {got(item, 'id')}; expected lower-case letters, "
                            "digits, '-' or '_'")
            continue
        where = f"links[{i}] ({link_id})"
        if link_id in links:
            problems.append(f"{where}.id: the link id {link_id!r} is used twice")
        unknown_keys(item, fields, where, problems)
        ends = []
        for end in ("site", "remote"):
            value = item.get(end)
            if not isinstance(value, str) or value not in sites:
                problems.append(f"{where}.{end}: {got(item, end)}; expected one of the sites: "
                                f"{', '.join(sites) or '(none configured)'}")
            ends.append(value)
        if ends[0] == ends[1] and ends[0] is not None:
            problems.append(f"{where}.remote: got {ends[1]!r}; a site cannot link to itself")
        direction = item.get("direction")
        if direction not in DIRECTIONS:
            problems.append(f"{where}.direction: {got(item, 'direction')}; expected one of "
                            f"{', '.join(DIRECTIONS)}")
        sync = item.get("sync", ["users"])
        if isinstance(sync, str):
            sync = [sync]
        if not isinstance(sync, list) or not sync:
            problems.append(f"{where}.sync: got {sync!r}; expected a list such as [users]")
            sync = []
        for kind in sync:
            if kind in SYNC_TYPES_PLANNED:
                problems.append(f"{where}.sync: {kind!r} is not supported yet; only "
                                f"{', '.join(SYNC_TYPES_SUPPORTED)} can be synced for now")
            elif kind not in SYNC_TYPES_SUPPORTED:
                problems.append(f"{where}.sync: got {kind!r}; expected "
                                f"{', '.join(SYNC_TYPES_SUPPORTED)}")
        match_by = item.get("match_by", "email")
        if match_by not in MATCH_BY:
            problems.append(f"{where}.match_by: got {match_by!r}; expected one of "
                            f"{', '.join(MATCH_BY)}")
        every, repair = _reconcile(item.get("reconcile"), f"{where}.reconcile", problems)
        roles_out, roles_in = link_rules.roles(item.get("roles"), direction, f"{where}.roles",
                                               problems)
        links[link_id] = Link(
            id=link_id, site=str(ends[0]), remote=str(ends[1]), direction=str(direction),
            reconcile_every=every, reconcile_repair=repair,
            sync=tuple(sync),
            incoming=_actions(item.get("incoming"), f"{where}.incoming", problems),
            outgoing=_actions(item.get("outgoing"), f"{where}.outgoing", problems),
            match_by=str(match_by),
            meta_keys=_meta_keys(item.get("meta_keys"), f"{where}.meta_keys", problems),
            roles_outgoing=roles_out, roles_incoming=roles_in,
            fields=link_rules.fields(item.get("fields"), f"{where}.fields", problems),
            initial_sync=link_rules.initial_sync(item.get("initial_sync"),
                                                 f"{where}.initial_sync", problems),
        )
    return links


def _meta_keys(raw: Any, where: str, problems: list[str]) -> tuple[str, ...] | None:
    """A link's allow-list of meta keys: exact keys, or prefixes ending in ``*``."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        problems.append(f"{where}: got {raw!r}; expected a list of meta keys, e.g. "
                        "[billing_*, favourite_colour]")
        return None
    for key in raw:
        bare = key.removesuffix("*")
        why = protected_meta.problem(bare) if bare else "an empty key or a bare '*'"
        if why is not None or "*" in bare:
            problems.append(f"{where}: {key!r} cannot be synced: "
                            f"{why or 'a * may only end a prefix'}")
    return tuple(raw)
