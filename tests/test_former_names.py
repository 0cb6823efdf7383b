"""Words this version replaced still work, and say what to use instead: the ``drift`` command
(now ``reconcile``), ``links progress`` (now ``links initial-sync``), the admin API's
``…/drift`` and ``…/progress`` routes, and the configuration's ``backfill`` section (now
``initial_sync``, tested in tests/test_config.py)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from relay.web.admin import create_admin_app
from tests.cli_run import userrelay

CONFIG = """\
sites:
  - {id: a, label: A, url: "http://127.0.0.1:9001", allow_http: true}
  - {id: b, label: B, url: "http://127.0.0.1:9002", allow_http: true}
links:
  - {id: a-b, site: a, remote: b, direction: push}
"""


def test_the_former_drift_command_runs_reconcile_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(CONFIG)

    former = userrelay("drift", "a-b", "--config", config)
    current = userrelay("reconcile", "a-b", "--config", config)

    assert "`userrelay drift` is now `userrelay reconcile`" in former.err
    assert "is now" not in current.err
    # Both stop at the same place: the link's sites have no key yet.
    assert (former.code, current.out) == (current.code, former.out)
    assert 0 != current.code and "cannot be compared yet" in current.err
    assert current.err in former.err


def test_links_initial_sync_and_its_former_name_progress_are_one_command(
        tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(CONFIG)

    former = userrelay("links", "progress", "a-b", "--config", config)
    current = userrelay("links", "initial-sync", "a-b", "--config", config)

    assert (0, "no initial sync") == (current.code, current.out.split(": ", 1)[1][:15])
    assert (former.code, former.out) == (current.code, current.out)


def test_the_admin_api_answers_at_the_former_routes_too() -> None:
    admin = create_admin_app(web.Application(), "t" * 32)
    routes = {(r.method, r.resource.canonical) for r in admin.router.routes()
              if r.resource is not None}

    for current, former in (("reconcile", "drift"), ("initial-sync", "progress")):
        method = "POST" if current == "reconcile" else "GET"
        assert (method, f"/admin/links/{{link}}/{current}") in routes
        assert (method, f"/admin/links/{{link}}/{former}") in routes
