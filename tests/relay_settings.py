"""Relay configurations for tests: a ``Config`` on a fresh database in ``tmp_path`` with quick
retries, a site entry, and a ``Config`` written back as the YAML file the CLI reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay import config as config_module
from relay.config import Config, Link
from relay.constants import LINK_FIELDS


def settings(tmp_path: Path, sites: list[dict[str, Any]], links: list[dict[str, Any]],
             ingest: dict[str, Any] | None = None, admin: dict[str, Any] | None = None,
             **delivery: Any) -> Config:
    """A relay configuration on a fresh database in ``tmp_path``, with quick retries.

    ``admin``: settings of the admin API (which listens on a free port when it has a token).
    """
    document = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"port": 0, **(admin or {})},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.05], "jitter": 0, "timeout": 5, "lease": 10,
                     "shutdown_grace": 2, **delivery},
        "ingest": ingest or {},
        "sites": sites,
        "links": links,
    }
    return config_module.from_mapping(document, base_dir=tmp_path)


def site(site_id: str, url: str) -> dict[str, Any]:
    return {"id": site_id, "label": site_id.title(), "url": url, "allow_http": True}


def config_file(config: Config, path: Path) -> Path:
    """``config`` written out as a YAML file (database, sites and links), for the CLI."""
    import yaml
    path.write_text(yaml.safe_dump({
        "database": str(config.database_path),
        "sites": [{"id": s.id, "label": s.label, "url": s.url, "allow_http": s.allow_http}
                  for s in config.sites.values()],
        "links": [{"id": lk.id, "site": lk.site, "remote": lk.remote,
                   "direction": lk.direction, "sync": list(lk.sync),
                   "incoming": sorted(lk.incoming), "outgoing": sorted(lk.outgoing),
                   "match_by": lk.match_by, **link_rules(lk)} for lk in config.links.values()],
    }))
    return path


def link_rules(link: Link) -> dict[str, Any]:
    """A link's role rules, fields and initial sync, as the file says them (when it does)."""
    said: dict[str, Any] = {}
    roles = {way: sorted(names) for way, names in (("outgoing", link.roles_outgoing),
                                                   ("incoming", link.roles_incoming)) if names}
    if roles:
        said["roles"] = roles
    if link.fields != frozenset(LINK_FIELDS):
        said["fields"] = sorted(link.fields)
    if not link.initial_sync:
        said["initial_sync"] = False
    return said
