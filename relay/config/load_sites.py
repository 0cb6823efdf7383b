"""Reading a configuration's sites: each one's id, label, address (https://; plain http only
for a loopback host, with ``allow_http``) and CA file, every problem named with its key path
and value (relay/config/load.py reads the rest of the file). No I/O but the CA file's check.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.config.sections import ID_PATTERN, Site


def read_sites(raw: Any, problems: list[str], base_dir: Path) -> dict[str, Site]:
    """The ``sites`` list, each site valid or its problems added to ``problems``."""
    sites: dict[str, Site] = {}
    if raw is None:
        return sites
    if not isinstance(raw, list):
        problems.append(f"sites: got {raw!r}; expected a list of sites")
        return sites
    for i, item in enumerate(raw):
        where = f"sites[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: got {item!r}; expected a mapping with id, label and url")
            continue
        unknown_keys(item, {"id", "label", "url", "allow_http", "ca_file"}, where, problems)
        site_id = item.get("id")
        if not isinstance(site_id, str) or not ID_PATTERN.match(site_id):
            problems.append(f"{where}.id: {got(item, 'id')}; expected lower-case letters, "
                            "digits, '-' or '_' (at most 63)")
            continue
        where = f"sites[{i}] ({site_id})"
        if site_id in sites:
            problems.append(f"{where}.id: the site id {site_id!r} is used twice")
        allow_http = item.get("allow_http", False)
        if not isinstance(allow_http, bool):
            problems.append(f"{where}.allow_http: got {allow_http!r}; expected true or false")
            allow_http = False
        url = item.get("url")
        if "url" not in item:
            problems.append(f"{where}.url: missing; expected the site's https:// URL")
        else:
            _check_url(url, allow_http, f"{where}.url", problems)
        label = item.get("label", site_id)
        if not isinstance(label, str):
            problems.append(f"{where}.label: got {label!r}; expected a string")
            label = site_id
        ca_file = _ca_file(item.get("ca_file"), base_dir, f"{where}.ca_file", problems)
        sites[site_id] = Site(site_id, label, str(url).rstrip("/"), allow_http, ca_file)
    return sites


def _ca_file(value: Any, base_dir: Path, where: str, problems: list[str]) -> Path | None:
    """A site's CA file: None, or a PEM file of certificates that ssl can load."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: got {value!r}; expected the path of a PEM file of CA "
                        "certificates")
        return None
    path = base_dir / value
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        problems.append(f"{where}: {path} does not exist")
    except (OSError, ssl.SSLError, ValueError) as exc:
        problems.append(f"{where}: {path} holds no CA certificate ssl can load ({exc})")
    return path


def got(item: dict[str, Any], key: str) -> str:
    """``missing`` for a key not given, else ``got VALUE``."""
    return f"got {item[key]!r}" if key in item else "missing"


def _check_url(url: Any, allow_http: bool, where: str, problems: list[str]) -> None:
    if not isinstance(url, str):
        problems.append(f"{where}: got {url!r}; expected the site's https:// URL")
        return
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises ValueError for e.g. http://[::1
    except ValueError as exc:
        problems.append(f"{where}: got {url!r}; not a URL ({exc}); expected an https:// URL "
                        "such as https://shop.example.com")
        return
    if parts.scheme == "http" and not (allow_http and is_loopback(parts.hostname or "")):
        problems.append(f"{where}: got {url!r}; expected an https:// URL (plain http only for "
                        "a site on this machine, with allow_http: true)" if not allow_http else
                        f"{where}: got {url!r}; plain http is allowed only for a loopback "
                        "address (127.0.0.1, ::1, localhost): anyone on the way could read and "
                        "alter the changes; use https://")
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{where}: got {url!r}; expected an https:// URL such as "
                        "https://shop.example.com")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unknown_keys(item: dict[str, Any], allowed: set[str], where: str, problems: list[str]) -> None:
    for key in item:
        if key not in allowed:
            problems.append(f"{where}.{key}: unknown key; expected one of "
                            f"{', '.join(sorted(allowed))}")
