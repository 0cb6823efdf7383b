"""What the set-up wizard's tests share: running `userrelay sites add` in this process with
flags, reading the key the relay stored, and recording the roles a site listed at its test.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from relay import config as config_module
from relay.cli.main import main
from relay.db.links import LinkBook
from relay.keys.keystore import KeyStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
KEY = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def add(config: Path, *flags: str) -> int:
    return main(["sites", "add", "--config", str(config), *flags])


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags mode, as under cron or CI: stdin is not a terminal."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def stored_key(config_path: Path, site: str) -> str | None:
    config = config_module.load(config_path)
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        key = store.get(site)
    finally:
        store.close()
    return None if key is None else key.secret


def record_roles_listed(config_path: Path, site: str, roles: list[str]) -> None:
    """``site`` passed a Test Connection at which its plugin listed ``roles``."""
    config = config_module.load(config_path)
    with LinkBook(config) as book:
        book.record_test(site, config.sites[site].url, "key-1", True, [
            {"name": "roles", "status": "ok", "detail": "", "fix": None,
             "data": {"roles": [{"slug": r, "name": r.title()} for r in roles]}}])
