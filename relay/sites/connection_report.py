"""What a Test Connection found: each check with its fix, the report that is shown and
recorded, and reading a plugin's answers (its JSON, its clock, its WordPress version and the
password hashes that version writes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from relay.db.links import LinkBook

#: The outcome of one check.
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

OLDEST_WORDPRESS = (6, 1)


#: How each password hash format begins, and which one a WordPress writes by default.
HASH_PREFIXES = {"phpass": "$P$", "bcrypt": "$2y$", "wp-bcrypt": "$wp$"}


NTP = ("synchronise both clocks with NTP (e.g. chrony or systemd-timesyncd) on the site's "
       "server and the relay's")


@dataclass
class Check:
    name: str
    title: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] | None = None


@dataclass
class ConnectionReport:
    site: str
    url: str
    key_id: str | None
    tested_at: float
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.key_id is not None and all(c.status != FAIL for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "url": self.url, "tested_at": self.tested_at,
                "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def record(book: LinkBook, report: ConnectionReport) -> None:
    """Store the report as the site's last test (and last passing one, if it passed)."""
    book.record_test(report.site, report.url, report.key_id or "", report.passed,
                     [asdict(c) for c in report.checks], now=report.tested_at)


def read_json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def clock_offset(remote: Any, date: str | None, ours: float) -> float | None:
    """The site's clock minus ours: from the answer's ``time``, else its Date header."""
    if isinstance(remote, int | float) and not isinstance(remote, bool):
        return float(remote) - ours
    if date:
        try:
            # Whole seconds, cut down: the middle of that second is the better guess.
            return parsedate_to_datetime(date).timestamp() + 0.5 - ours
        except (TypeError, ValueError):
            return None
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def hash_written_by(version: str) -> str:
    """The hash format a WordPress writes by default: ``$wp$`` from 6.8 on."""
    return "wp-bcrypt" if version_tuple(version) >= (6, 8) else "phpass"
