"""A link taken out of the configuration while deliveries were queued on it: at the next
start they become dead letters (kept, replayable) instead of waiting forever, and they no
longer hold their people's later changes behind them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from relay import config as config_module
from relay.db.links import LinkBook
from tests.support import RelayProcess, event, generate_keys, post_signed, write_config


def document(tmp_path: Path, b_url: str, link: str) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "database": str(tmp_path / "relay.sqlite3"),
        "delivery": {"retry_schedule": [0.05], "jitter": 0},
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": b_url, "allow_http": True}],
        "links": [{"id": link, "site": "a", "remote": "b", "direction": "push"}],
    }


async def test_deliveries_of_a_removed_link_are_dead_lettered_and_block_nothing(
        partner_factory: Any, tmp_path: Path) -> None:
    b = await partner_factory()
    path = write_config(tmp_path / "relay.yaml", document(tmp_path, b.url, "old"))
    keys = generate_keys(config_module.load(path))
    with sqlite3.connect(tmp_path / "relay.sqlite3") as conn:  # the link is held: it queues
        conn.execute("UPDATE link_states SET paused = 1, reason = 'held' "
                     "WHERE link = 'old'")
    relay = RelayProcess(path)
    await relay.start()
    await post_signed(relay.url, "a", keys["a"], [event("e1", 1, ["create"])])
    await relay.terminate()

    write_config(path, document(tmp_path, b.url, "new"))
    config = config_module.load(path)
    with LinkBook(config) as book:  # both sites passed their tests already: start the link
        book.start("new")
    relay = RelayProcess(path)
    await relay.start()
    try:
        logged = await relay.logged("deliveries_of_a_removed_link_dead_lettered")
        status, _ = await post_signed(relay.url, "a", keys["a"],
                                      [event("e2", 1, ["edit"], first_name="Later")])
        await b.wait_for(lambda: len(b.events) == 1)
    finally:
        await relay.terminate()

    assert (202, "old", 1) == (status, logged["link"], logged["deliveries"])
    assert "e2" == b.events[0]["origin"]["event_id"]
    with sqlite3.connect(tmp_path / "relay.sqlite3") as conn:
        assert [("old", "dead", "link 'old' is no longer in the configuration")] == \
            conn.execute("SELECT link, state, last_error FROM deliveries WHERE "
                         "link = 'old'").fetchall()
