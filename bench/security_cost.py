"""What the protocol-2 checks cost: this tree next to an older one, in the same run.

1. Ingest: signed one-event requests/s of the relay (wrk, 64 connections, server on one core,
   load on the other), this tree's relay and the baseline's, in alternating rounds. Each is
   signed the way its own protocol signs.
2. Apply: users/s a plugin applies from signed batches of creates (with password, role and
   meta) POSTed straight to its events route, on two real WordPress sites of one lab: one with
   this tree's plugin, one with the baseline's, in alternating rounds.

``python -m bench.security_cost --baseline a2441e0``. The baseline is checked out into a
temporary git worktree and removed afterwards. Needs wrk and, for part 2, root (Debian's
packages). Only loopback; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    free_port,
    process,
    relay_config,
    run_wrk,
    wrk_script,
)
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import Direction

ROOT = Path(__file__).resolve().parents[1]


def worktree(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into),
                    revision], check=True, capture_output=True)
    return into


def v1_headers(key: SiteKey, body: bytes, webhook_id: str) -> dict[str, str]:
    """How protocol 1 signed: the site key itself over id.timestamp.body."""
    now = int(time.time())
    digest = hmac.digest(key.hmac_key, f"{webhook_id}.{now}.".encode() + body, hashlib.sha256)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(now),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
            "content-type": "application/json"}


def v1_wrk_script(work: Path, key: SiteKey, count: int) -> Path:
    """The wrk script of ``bench.common.wrk_script``, signed as protocol 1 did."""
    from bench.common import one_event
    lines = []
    for n in range(1, count + 1):
        body = json.dumps({"events": [one_event(n)]}, separators=(",", ":"))
        h = v1_headers(key, body.encode(), f"msg_bench_{n}")
        lines.append("\t".join([h["webhook-id"], h["webhook-timestamp"],
                                h["webhook-signature"], body]))
    data = work / "requests-v1.tsv"
    data.write_text("\n".join(lines) + "\n")
    script = work / "ingest-v1.lua"
    script.write_text(wrk_script(work, key, 1).read_text()
                      .replace(str(work / "requests-1.tsv"), str(data)))
    return script


def tree_keys(tree: Path, config: Path, database: Path) -> SiteKey:
    """Site a's key, made by ``tree``'s own code (its keys, tests and link states)."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from bench.common import make_keys, pause_link; "
         "k = make_keys(Path(sys.argv[1])); pause_link(Path(sys.argv[2]), 'a-b'); "
         "print('KEY', k['a'].secret)", str(config), str(database)],
        cwd=tree, capture_output=True, text=True)
    secret = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("KEY ")]
    if out.returncode or not secret:
        raise SystemExit(f"{tree} could not make its keys:\n{out.stderr[-2000:]}")
    return SiteKey(secret[0])


def speaks_protocol_2(tree: Path) -> bool:
    """Whether ``tree``'s relay takes protocol 2 (then it is signed as this tree signs)."""
    return any("PROTOCOL = 2" in path.read_text()
               for name in ("relay/constants.py", "relay/signatures.py", "relay/keys/signatures.py")
               if (path := tree / name).is_file())


def ingest(work: Path, baseline: Path, candidate: Path, seconds: int, rounds: int) -> None:
    trees = {"this tree": (candidate, "new"), "baseline": (baseline, "old")}
    setups: dict[str, tuple[Path, int, Path]] = {}
    for name, (tree, tag) in trees.items():
        folder = work / tag
        folder.mkdir()
        port = free_port()
        config = relay_config(folder, port, free_port())
        key = tree_keys(tree, config, folder / "relay.sqlite3")
        script = (wrk_script(folder, key, 200_000) if speaks_protocol_2(tree)
                  else v1_wrk_script(folder, key, 200_000))
        setups[name] = (config, port, script)
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, (tree, _) in trees.items():
            config, port, script = setups[name]
            with process([sys.executable, "-m", "relay", "serve", "--config", str(config)],
                         port=port, log=config.with_name("relay.log"), cwd=tree):
                outcome = run_wrk(port, script, seconds)
                if outcome["non_2xx"]:
                    raise SystemExit(f"{name}: {outcome['non_2xx']:.0f} answers were not 2xx; "
                                     f"see {config.with_name('relay.log')}")
                results[name].append(outcome["rps"])
    new, old = max(results["this tree"]), max(results["baseline"])
    print(f"ingest, this tree : {new:9.0f} req/s  (rounds: "
          f"{', '.join(f'{r:.0f}' for r in results['this tree'])})")
    print(f"ingest, baseline  : {old:9.0f} req/s  (rounds: "
          f"{', '.join(f'{r:.0f}' for r in results['baseline'])})")
    print(f"ingest ratio      : {new / old:.2f}")


def deliveries(site_id: str, start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": str(n), "origin": {"site": "source", "event_id": f"bench-{site_id}-{n}"},
             "occurred_at": time.time(), "actions": ["create", "password", "roles", "metadata"],
             "match": {"by": "email", "user_id": None}, "create_missing": True,
             "user": {"login": f"apply{n}", "email": f"apply{n}@example.test",
                      "first_name": "Bench", "last_name": f"User {n}", "display_name": f"B {n}",
                      "password_hash": "$P$B12345678901234567890123456789.",
                      "roles": ["subscriber"],
                      "meta": {"billing_city": "Oslo", "favourite_colour": "green",
                               "bio_note": "x" * 200}, "meta_deleted": []}}
            for n in range(start, start + count)]


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=120) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def apply(work: Path, baseline: Path, candidate: Path, users: int, batch: int,
          rounds: int) -> None:
    from tests.e2e.wplab import Lab, ensure_packages
    reason = ensure_packages()
    if reason:
        print(f"apply: skipped, WordPress cannot run here: {reason}")
        return
    keys = {"new": SiteKey.generate(), "old": SiteKey.generate()}
    plugins = {"new": candidate / "plugin-stub" / "userrelay",
               "old": baseline / "plugin-stub" / "userrelay"}
    with Lab(work / "lab") as lab:
        sites = {tag: lab.add_site(tag, free_port(), constants={
            "USERRELAY_URL": "http://127.0.0.1:9", "USERRELAY_SITE": tag,
            "USERRELAY_KEY": keys[tag].secret}, plugin_dirs={"userrelay": plugins[tag]})
            for tag in ("new", "old")}
        rates: dict[str, list[float]] = {"new": [], "old": []}
        made = {"new": 0, "old": 0}
        for _ in range(rounds):
            for tag, site in sites.items():
                url = f"{site.url}/wp-json/userrelay/v1/events"
                started = time.perf_counter()
                for first in range(made[tag], made[tag] + users, batch):
                    events = deliveries(tag, first, batch)
                    if tag == "new":
                        body = json.dumps(signatures.envelope("events", tag,
                                                              events=events)).encode()
                        headers = signatures.headers(keys[tag], body, Direction.TO_SITE)
                    else:
                        body = json.dumps({"events": events}).encode()
                        headers = v1_headers(keys[tag], body, f"msg_{tag}_{first}")
                    answer = post(url, body, headers)
                    statuses = {r["status"] for r in answer["results"]}
                    if statuses != {201} or len(answer["results"]) != batch:
                        raise SystemExit(f"{tag}: unexpected results {answer['results'][:3]}")
                rates[tag].append(users / (time.perf_counter() - started))
                made[tag] += users
    new, old = max(rates["new"]), max(rates["old"])
    print(f"apply, this tree  : {new:7.1f} users/s  (rounds: "
          f"{', '.join(f'{r:.1f}' for r in rates['new'])})")
    print(f"apply, baseline   : {old:7.1f} users/s  (rounds: "
          f"{', '.join(f'{r:.1f}' for r in rates['old'])})")
    print(f"apply ratio       : {new / old:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True, help="the git revision to compare with")
    parser.add_argument("--candidate", help="the git revision measured (default: this checkout "
                        "as it is)")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=500, help="users applied per round")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-apply", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="userrelay-security-cost-"))
    baseline = worktree(args.baseline, work / "baseline")
    candidate = worktree(args.candidate, work / "candidate") if args.candidate else ROOT
    try:
        if not args.skip_ingest:
            if shutil.which("wrk") is None:
                raise SystemExit("the ingest part needs wrk (apt-get install wrk)")
            ingest(work, baseline, candidate, args.seconds, args.rounds)
        if not args.skip_apply:
            apply(work, baseline, candidate, args.users, args.batch, args.rounds)
    finally:
        for tree in {baseline, candidate} - {ROOT}:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
