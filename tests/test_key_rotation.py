"""Key rotation: the old key stops at once, or after a grace; deliveries use the new key only;
a new key holds the site's links until it passes a connection test again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from relay import config as config_module
from relay.db.links import LinkBook
from relay.keys.keystore import KeyStore
from relay.sites.connection_report import record
from relay.sites.connection_test import run_connection_test
from tests.support import Relay, event, generate_keys, until


def keystore(relay: Relay) -> KeyStore:
    return KeyStore(relay.config.database_path, relay.config.master_key_path)


async def test_rotating_without_grace_refuses_the_old_key_at_once(two_sites: Any) -> None:
    relay, _ = await two_sites()
    old = relay.keys["a"]
    store = keystore(relay)
    new = store.rotate("a")
    store.close()

    refused = await relay.post("a", [event("e1", 1, ["create"])], key=old)
    taken = await relay.post("a", [event("e2", 2, ["create"])], key=new)

    assert (401, "the signature does not match this site's current key") == (
        refused[0], refused[1]["error"])
    assert 202 == taken[0]


async def test_during_the_grace_both_keys_are_accepted_then_only_the_new_one(
        two_sites: Any) -> None:
    relay, _ = await two_sites()
    old = relay.keys["a"]
    store = keystore(relay)
    rotated_at = time.monotonic()
    new = store.rotate("a", grace=0.5)

    during = [(await relay.post("a", [event(f"e{n}", n, ["create"])], key=key))[0]
              for n, key in ((1, old), (2, new))]
    await until(lambda: store.accepted("a") == [new], timeout=5)
    after = [(await relay.post("a", [event(f"e{n}", n, ["create"])], key=key))[0]
             for n, key in ((3, old), (4, new))]
    store.close()

    assert ([202, 202], [401, 202]) == (during, after)
    assert time.monotonic() - rotated_at >= 0.5


async def test_ending_the_grace_refuses_the_old_key_at_once(two_sites: Any) -> None:
    relay, _ = await two_sites()
    old = relay.keys["a"]
    store = keystore(relay)
    store.rotate("a", grace=30 * 60)
    accepted = await relay.post("a", [event("e1", 1, ["create"])], key=old)

    store.end_grace("a")
    store.close()
    refused = await relay.post("a", [event("e2", 2, ["create"])], key=old)

    assert (202, 401) == (accepted[0], refused[0])


def test_the_grace_is_kept_as_an_expiry_time(tmp_path: Path) -> None:
    config = config_module.from_mapping({"database": str(tmp_path / "relay.sqlite3"),
                                         "sites": [{"id": "a", "url": "https://a.test"}]})
    store = KeyStore(config.database_path, config.master_key_path)
    old = store.generate("a")
    new = store.rotate("a", grace=600, now=1000.0)

    assert [new, old] == store.accepted("a", now=1599.0)
    assert [new] == store.accepted("a", now=1600.0)
    assert new == store.get("a")
    store.close()


async def test_deliveries_are_signed_with_the_new_key_once_the_site_is_tested_with_it(
        two_sites: Any) -> None:
    relay, b = await two_sites()
    store = keystore(relay)
    b.key = store.rotate("b", grace=30 * 60)  # the admin pastes the new key into site b
    await relay.post("a", [event("e1", 1, ["create"])])
    with LinkBook(relay.config) as book:
        assert "draft" == book.state("a-b").state
        report = await run_connection_test(relay.config, "b", store, tests=book.site_tests(),
                                           timeout=5)
        record(book, report)
    store.close()

    await b.wait_for(lambda: len(b.events) == 1)  # b verifies with the new key only
    await until(lambda: relay.db("SELECT state FROM deliveries") == [("done",)])


def write(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "database": "relay.sqlite3",
        "sites": [{"id": "a", "url": "https://a.example.test"},
                  {"id": "b", "label": "Branch", "url": "https://b.example.test"}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push"}]}))
    return path


def userrelay(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args, "--config", str(path)],
                          capture_output=True, text=True, check=False)


def test_keys_rotate_prints_the_new_key_once_with_where_to_paste_it(tmp_path: Path) -> None:
    path = write(tmp_path)
    config = config_module.load(path)
    generate_keys(config)

    result = userrelay(path, "keys", "rotate", "b", "--grace", "30")

    store = KeyStore(config.database_path, config.master_key_path)
    new = store.get("b")
    until_ = store.grace_until("b")
    store.close()
    assert 0 == result.returncode, result.stderr
    assert new is not None and until_ is not None
    assert 1 == result.stdout.count(new.secret)
    assert f"    define( 'USERRELAY_KEY', '{new.secret}' );" in result.stdout
    assert ("The previous key is still accepted from the site until "
            f"{time.strftime('%H:%M:%S UTC', time.gmtime(until_))} (30 min).") in result.stdout
    assert ("Links of this site (a-b) deliver nothing until it passes a connection test with "
            f"the new key:\n\n    userrelay sites test b --config {path}") in result.stdout
    with LinkBook(config) as book:
        assert book.state("a-b").reason == ("site 'b' has not passed a connection test since "
                                            "its key changed; run userrelay sites test b "
                                            f"--config {path}")


def test_keys_generate_also_resets_the_sites_test_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path)
    config = config_module.load(path)
    generate_keys(config)

    result = userrelay(path, "keys", "generate", "a")

    assert 0 == result.returncode, result.stderr
    assert "Any previous key of this site no longer works." in result.stdout
    assert "userrelay sites test a" in result.stdout
    with LinkBook(config) as book:
        assert ("draft", True) == (book.state("a-b").state, book.state("a-b").started)


def test_a_grace_that_is_not_a_number_of_minutes_is_refused(tmp_path: Path) -> None:
    result = userrelay(write(tmp_path), "keys", "rotate", "b", "--grace", "soon")

    assert 2 == result.returncode
    assert "--grace: got 'soon'; expected minutes from 0 to 10080 (a week)" in result.stderr
