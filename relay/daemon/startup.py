"""What must hold before the relay opens anything: its files, checked without changing them.

``problems(config)`` is every problem ``userrelay serve`` would stop at, found without
creating a file: two sites at one URL, the database's path, the master key (missing,
unreadable, not a key, or not the key the stored site keys were sealed with), the admin
token file, and a database left at the name earlier versions used. ``userrelay
check-config`` prints them; ``serve`` refuses to start on any (``check``). It opens nothing
for writing and holds nothing open.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from relay.config import Config
from relay.db.store import SQLITE_HEADER
from relay.errors import ConfigError, KeyStoreError
from relay.keys.crypto import MasterKey, MasterKeyMissing
from relay.web import admin


def check(config: Config) -> None:
    """``ConfigError`` listing every problem ``problems`` finds."""
    found = problems(config)
    if found:
        raise ConfigError(config.source, found)


def problems(config: Config) -> list[str]:
    found = shared_urls(config)
    database = config.database_path
    trouble = database_problem(database)
    if trouble:
        found.append(f"database ({database}): {trouble}")
    found.extend(master_key_problems(config, readable_database=not trouble))
    try:
        admin.load_token(config)
    except ConfigError as exc:
        found.extend(exc.problems)
    return found


def shared_urls(config: Config) -> list[str]:
    """Two site ids for one WordPress: each would get the other's changes back."""
    found: list[str] = []
    first: dict[str, str] = {}
    for site in config.sites.values():
        url = site.url.lower()
        if url in first:
            found.append(f"sites ({site.id}).url: {site.url} is also the URL of site "
                         f"{first[url]!r}; a WordPress site is one site id, with one key")
        else:
            first[url] = site.id
    return found


def database_problem(path: Path) -> str | None:
    """Why the database at ``path`` cannot be opened or made; None if it can."""
    if path.is_dir():
        return "is a folder, not a file (the setting `database` names the file itself)"
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return "this user cannot read and write it"
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"
        if header and header != SQLITE_HEADER:
            return "is not an SQLite database (another file has this name?)"
        if not os.access(path.parent, os.W_OK):
            return f"its folder {path.parent} is not writable by this user (SQLite writes " \
                   "its journal there)"
        return None
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot be made: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be made: this user cannot write in {folder}"
    try:  # access() says yes to root everywhere, /proc included: try it for real
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".userrelay-check-")
    except OSError as exc:
        return f"cannot be made: cannot write in {folder}: {exc.strerror or exc}"
    os.close(descriptor)
    os.unlink(probe)
    return None


def master_key_problems(config: Config, readable_database: bool) -> list[str]:
    path = config.master_key_path
    where = f"master_key_file ({path})"
    try:
        master = MasterKey.load(path)
    except MasterKeyMissing:
        master = None
    except KeyStoreError as exc:
        return [f"{where}: {exc}"]
    stored = _stored_keys(config.database_path) if readable_database else []
    if master is None:
        if stored:
            return [f"{where}: the file does not exist, but the database holds the keys of "
                    f"{', '.join(s for s, _ in stored)} sealed with it; restore it from your "
                    "backup, or (lost for good) make a new one and a new key for every site: "
                    f"userrelay init --new-master-key --config {config.source}"]
        return []
    unreadable = []
    for site, sealed in stored:
        try:
            master.open(sealed, site)
        except KeyStoreError:
            unreadable.append(site)
    if unreadable:
        return [f"{where}: does not open the keys of {', '.join(unreadable)} stored in the "
                "database: it is not the key they were sealed with. Restore the right file "
                "from your backup, or make a new one and a new key for every site: "
                f"userrelay init --new-master-key --config {config.source}"]
    return []


def _stored_keys(database: Path) -> list[tuple[str, bytes]]:
    """The sealed keys in ``database``, read without changing it (none if it has no table)."""
    if not database.is_file():
        return []
    try:
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return [(str(site), bytes(sealed)) for site, sealed in
                conn.execute("SELECT site, sealed FROM site_keys ORDER BY site")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()
