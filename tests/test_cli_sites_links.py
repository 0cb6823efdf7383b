"""Sites and links listed, edited and removed from the command line, keeping the file's
comments; a removal says what becomes of what is queued and asks first.

Each test runs ``userrelay`` as a child process (tests/cli_run.py: no traceback, no hang).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from relay import config as config_module
from tests.cli_run import userrelay

ROOT = Path(__file__).resolve().parent.parent


def example(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    shutil.copy(ROOT / "config.example.yaml", path)
    for site in ("shop", "branch"):
        assert 0 == userrelay("keys", "generate", site, "--config", path).code
    return path


def queue(path: Path, *deliveries: tuple[str, str, str]) -> None:
    """Deliveries (link, target, state) as the relay would have queued them."""
    config = config_module.load(path)
    now = time.time()
    with sqlite3.connect(config.database_path) as conn:
        for i, (link, target, state) in enumerate(deliveries, 1):
            conn.execute("INSERT INTO deliveries (source, event_id, target, link, person, kind, "
                         "actions, payload, state, run_at, created_at, updated_at) VALUES "
                         "('shop', ?, ?, ?, ?, 'create', 'create', '{}', ?, ?, ?, ?)",
                         (f"e{i}", target, link, i, state, now, now, now))


def test_sites_list_shows_each_sites_address_key_test_and_links(tmp_path: Path) -> None:
    path = example(tmp_path)

    result = userrelay("sites", "list", "--config", path)

    assert 0 == result.code, result.err
    assert ("shop  Main store  https://shop.example.com\n    key: yes; never tested\n"
            "    links: shop-to-branch (shop -> branch, push)\n") in result.out


def test_links_edit_changes_the_link_and_keeps_every_comment(tmp_path: Path) -> None:
    path = example(tmp_path)
    comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#")]

    result = userrelay("links", "edit", "shop-to-branch", "--direction", "bidirectional",
                       "--incoming", "create,edit", "--config", path)

    link = config_module.load(path).links["shop-to-branch"]
    assert 0 == result.code, result.err
    assert ("bidirectional", frozenset({"create", "edit"})) == (link.direction, link.incoming)
    assert comments == [line for line in path.read_text().splitlines()
                        if line.lstrip().startswith("#")]
    assert "systemctl reload userrelay" in result.out


def test_links_edit_refuses_a_bad_value_and_writes_nothing(tmp_path: Path) -> None:
    path = example(tmp_path)
    before = path.read_text()

    result = userrelay("links", "edit", "shop-to-branch", "--direction", "sideways",
                       "--config", path)

    assert 1 == result.code
    assert "direction: got 'sideways'; expected one of push, pull, bidirectional" in result.err
    assert before == path.read_text()


def test_removing_a_link_says_what_is_queued_and_needs_a_confirmation(tmp_path: Path) -> None:
    path = example(tmp_path)
    queue(path, ("shop-to-branch", "branch", "ready"), ("shop-to-branch", "branch", "waiting"))
    before = path.read_text()

    refused = userrelay("links", "remove", "shop-to-branch", "--config", path)
    unchanged = path.read_text()
    removed = userrelay("links", "remove", "shop-to-branch", "--yes", "--config", path)
    dead = userrelay("dead", "list", "--config", path)

    assert 1 == refused.code
    assert "2 deliveries are queued on link shop-to-branch (1 waiting, 1 ready): they become " \
        "dead letters" in refused.out
    assert "add --yes to confirm" in refused.err
    assert before == unchanged
    assert 0 == removed.code, removed.err
    assert {} == config_module.load(path).links
    assert "shop-to-branch" not in path.read_text()
    assert "# The SQLite file with the queue" in path.read_text()
    assert 2 == dead.out.count("link 'shop-to-branch' was removed from the configuration")


def test_removing_a_site_removes_its_links_its_key_and_dead_letters_its_queue(
        tmp_path: Path) -> None:
    path = example(tmp_path)
    queue(path, ("shop-to-branch", "branch", "ready"))

    result = userrelay("sites", "remove", "branch", "--yes", "--config", path)
    status = userrelay("status", "--config", path)
    config = config_module.load(path)

    assert 0 == result.code, result.err
    assert "with its links shop-to-branch" in result.out
    assert "1 deliveries are queued to or from branch (1 ready)" in result.out
    assert (["shop"], {}) == (list(config.sites), config.links)
    with sqlite3.connect(config.database_path) as conn:
        assert [("shop",)] == conn.execute("SELECT site FROM site_keys").fetchall()
        assert [("dead",)] == conn.execute("SELECT state FROM deliveries").fetchall()
    assert 0 == status.code, status.err
