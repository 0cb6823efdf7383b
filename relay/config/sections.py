"""Every setting, declared once: a frozen dataclass per section of the file, each field with
how it is read, its default and its help (docs/configuration.md documents each; a test
checks). ``Config`` holds the sections, the sites and the links. No I/O here beyond reading the
environment for the systemd credential.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.constants import LINK_FIELDS, RECOMMENDED_ACTIONS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Name of the systemd credential holding the master key ($CREDENTIALS_DIRECTORY/master.key).
MASTER_KEY_CREDENTIAL = "master.key"
#: The configuration file of a command given no --config: $USERRELAY_CONFIG, else this.
DEFAULT_FILE = "config.yaml"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"5s"``, ``"30m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30, '30s', '5m', '2h' or '1d'")
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError("a duration such as 30, '30s', '5m', '2h' or '1d'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number of at least 1")
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("a port number from 0 to 65535")
    return value


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError("a number from 0 up to (not including) 1")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def _public_url(value: Any) -> str:
    if value == "":
        return ""
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or parts is None or parts.query or parts.fragment:
        raise ValueError("the relay's http(s):// address as the sites reach it, such as "
                         "https://relay.example.com")
    return str(value).rstrip("/")


def _schedule(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list of durations, e.g. [5s, 5m, 30m, 2h]")
    return tuple(parse_duration(v) for v in value)


def setting(parse: Callable[[Any], Any], default: Any, meaning: str) -> Any:
    """A field of a section: how to read it from the file, its default and what it means."""
    return field(default=default, metadata={"parse": parse, "help": meaning})


@dataclass(frozen=True)
class Files:
    """The top-level settings: the relay's public address and its files."""

    public_url: str = setting(_public_url, "",
        "The relay's address as the sites reach it (what `userrelay sites add` prints for "
        "USERRELAY_URL), e.g. https://relay.example.com behind a reverse proxy with TLS. "
        "Empty: the listener's own address, http://listen.host:listen.port.")
    database: str = setting(_text, "",
        "SQLite file holding the queue, identities, receipts and keys; relative to this "
        "file. Empty: var/NAME.sqlite3 beside this file, NAME being this file's name "
        "without its extension (config.yaml: var/config.sqlite3), so two configurations "
        "never share a database unless both name the same file.")
    master_key_file: str = setting(_text, "",
        "File with the key that encrypts site keys at rest (mode 0600). It is made only by "
        "an explicit step: `userrelay init`, or the first `keys generate` or `sites add` "
        "while the database holds no key, which say so. A missing or different master key "
        "while the database holds keys is an error, never replaced. Empty: 'master.key' "
        "beside the database. Under systemd, a credential named 'master.key' "
        "(LoadCredential=) takes precedence.")


@dataclass(frozen=True)
class Listen:
    """``listen``: the public listener the sites send their changes to."""

    host: str = setting(_text, "127.0.0.1", "Address the public listener binds to.")
    port: int = setting(_port, 8480, "Port of the public listener (0 picks a free one).")


@dataclass(frozen=True)
class Admin:
    """``admin``: the admin API and console, on a listener of their own."""

    host: str = setting(_text, "127.0.0.1",
        "Address the admin API listens on, apart from the sites' listener; keep it local.")
    port: int = setting(_port, 8481, "Port of the admin API (0 picks a free one).")
    token_file: str = setting(_text, "",
        "File holding the admin API's bearer token (one line, at least 32 characters); "
        "relative to this file. Empty: the token comes from the environment variable "
        "USERRELAY_ADMIN_TOKEN. With neither, the admin API is off.")


@dataclass(frozen=True)
class Ingest:
    """``ingest``: how the relay takes the sites' signed reports."""

    max_body_bytes: int = setting(_positive_int, 1_048_576,
        "Largest request body accepted from a site; larger ones get 413.")
    timestamp_tolerance: float = setting(parse_duration, 300.0,
        "How far a request's webhook-timestamp may be from our clock.")
    body_timeout: float = setting(parse_duration, 30.0,
        "How long a request's body may take to arrive once its headers passed; a slower "
        "one gets 408 and nothing is read further.")
    receipt_retention: float = setting(parse_duration, 7 * 86400.0,
        "How long a webhook-id is remembered, so a repeat gets the first answer again.")
    commit_batch: int = setting(_positive_int, 256,
        "Most requests committed together in one transaction (group commit).")


@dataclass(frozen=True)
class Delivery:
    """``delivery``: how the couriers send changes to the sites, and retry."""

    batch_size: int = setting(_positive_int, 100,
        "Most events sent to a site in one request when a backlog exists.")
    in_flight: int = setting(_positive_int, 4,
        "Requests in flight at once to one site.")
    timeout: float = setting(parse_duration, 30.0, "Time limit of one delivery request.")
    lease: float = setting(parse_duration, 120.0,
        "How long a claimed delivery stays leased; longer than delivery.timeout, so a "
        "delivery is never sent twice at once. Expired leases are reclaimed.")
    retry_schedule: tuple[float, ...] = setting(
        _schedule, (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0),
        "Waits before each retry (the Standard Webhooks schedule); the last repeats.")
    jitter: float = setting(_fraction, 0.2,
        "Random spread applied to each wait (0.2 = +/-20%).")
    max_attempts: int = setting(_positive_int, 10,
        "Attempts before a delivery is dead-lettered.")
    max_age: float = setting(parse_duration, 3 * 86400.0,
        "Age after which a failing delivery is dead-lettered, whatever its attempts.")
    max_retry_after: float = setting(parse_duration, 86400.0,
        "Longest Retry-After from a site that is honoured as given.")
    shutdown_grace: float = setting(parse_duration, 10.0,
        "On SIGTERM, how long in-flight deliveries may take to finish.")


@dataclass(frozen=True)
class InitialSync:
    """``initial_sync``: how a new link's existing users are read and sent."""

    page_size: int = setting(_positive_int, 200,
        "Users asked of a site per page during a link's initial sync (at most 1000).")
    window: int = setting(_positive_int, 2,
        "Pages of a link's initial sync that may wait for delivery before the next is read.")


#: Each section's class by its key in the file ("" for the top-level settings).
SECTIONS: dict[str, type[Any]] = {"": Files, "listen": Listen, "admin": Admin, "ingest": Ingest,
                                  "delivery": Delivery, "initial_sync": InitialSync}
#: Section keys of earlier versions, still read, with a note saying to rename them.
SECTION_ALIASES = {"backfill": "initial_sync"}


@dataclass(frozen=True)
class Setting:
    """One scalar setting: its dotted key, how to read it, its default and what it means."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


#: Every scalar setting by its dotted key, from the sections above.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f"{head}.{f.name}" if head else f.name, f.metadata["parse"], f.default,
            f.metadata["help"])
    for head, section in SECTIONS.items() for f in fields(section))


@dataclass(frozen=True)
class Site:
    id: str
    label: str
    url: str
    allow_http: bool = False
    #: PEM file of the certificate authorities trusted for this site's https URL instead of the
    #: system's store (a private CA); None: the system's store. Verification is never off.
    ca_file: Path | None = None


@dataclass(frozen=True)
class Link:
    """What a site admin sets up for one remote site, as seen from ``site``."""

    id: str
    site: str
    remote: str
    direction: str
    sync: tuple[str, ...] = ("users",)
    incoming: frozenset[str] = frozenset(RECOMMENDED_ACTIONS)
    outgoing: frozenset[str] = frozenset(RECOMMENDED_ACTIONS)
    match_by: str = "email"
    reconcile_every: float | None = None   # seconds between reconciliations; None: off
    reconcile_repair: bool = False         # a scheduled reconciliation also repairs
    #: The meta keys the link carries (exact, or a prefix ending in ``*``); None: every key
    #: that may be synced at all (relay/config/protected_meta.py).
    meta_keys: tuple[str, ...] | None = None
    #: The role slugs whose users the link's site sends (judged by their roles on the site);
    #: None: every user, as without role rules (relay/config/link_rules.py).
    roles_outgoing: frozenset[str] | None = None
    #: The role slugs the link's site accepts from the remote; None: every user.
    roles_incoming: frozenset[str] | None = None
    #: The profile fields (and email) the link carries; the default is every one of them.
    fields: frozenset[str] = frozenset(LINK_FIELDS)
    #: Whether the first start copies the users the sites already have (ADR 0006); false: only
    #: changes from the start on, and "send now", travel.
    initial_sync: bool = True


@dataclass(frozen=True)
class Config:
    """A validated configuration: its typed sections, the sites and the links."""

    source: str
    base_dir: Path
    files: Files = Files()
    listen: Listen = Listen()
    admin: Admin = Admin()
    ingest: Ingest = Ingest()
    delivery: Delivery = Delivery()
    initial_sync: InitialSync = InitialSync()
    sites: dict[str, Site] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    #: What the file says in words this version replaced (still honoured): shown by
    #: ``check-config`` and logged when the daemon starts.
    notes: tuple[str, ...] = ()

    @property
    def public_url(self) -> str:
        return self.files.public_url

    @property
    def database_path(self) -> Path:
        return self.base_dir / (self.files.database or default_database(self.source))

    @property
    def flag(self) -> str:
        """`` --config FILE``, or nothing for the file a command reads by default."""
        if self.source == default_file() or self.source.startswith("<"):
            return ""
        return f" --config {self.source}"

    def command(self, text: str) -> str:
        """``userrelay TEXT --config FILE``: a hint that works when pasted."""
        return f"userrelay {text}{self.flag}"

    @property
    def relay_url(self) -> str:
        """The relay's address as the sites reach it: ``public_url``, else the listener's."""
        if self.files.public_url:
            return self.files.public_url
        host = self.listen.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard is reached on loopback
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.listen.port}"

    @property
    def master_key_path(self) -> Path:
        # Under systemd, LoadCredential=master.key:FILE hands the service its own copy of the
        # key, readable by it alone; that copy is the key (master_key_file names FILE for the
        # administrator's commands, run outside the service).
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / MASTER_KEY_CREDENTIAL).is_file():
            return Path(credentials) / MASTER_KEY_CREDENTIAL
        if self.files.master_key_file:
            return self.base_dir / self.files.master_key_file
        return self.database_path.parent / "master.key"


def default_file() -> str:
    """The file a command reads without --config: ``$USERRELAY_CONFIG``, else config.yaml."""
    return os.environ.get("USERRELAY_CONFIG") or DEFAULT_FILE


def default_database(source: str) -> str:
    """``var/NAME.sqlite3`` for a configuration file ``NAME.yaml``: one database per file."""
    stem = Path(source).stem if source and not source.startswith("<") else "userrelay"
    return f"var/{stem or 'userrelay'}.sqlite3"
