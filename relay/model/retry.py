"""When to try a failed delivery again, and when to give up (dead-letter it)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float
    max_attempts: int
    max_age: float
    max_retry_after: float

    def delay(self, attempts: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt.

        A ``Retry-After`` from the site is honoured as given, up to ``max_retry_after``.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1 + spread)

    def gives_up(self, attempts: int, age: float) -> str | None:
        """Why a delivery that failed again should be dead-lettered, or None to retry."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if age >= self.max_age:
            return f"gave up after {age / 3600:.1f} hours of failures"
        return None


#: delta-seconds as RFC 9110 spells them: ASCII digits only (``str.isdigit`` takes "²").
_DELTA_SECONDS = re.compile(r"[0-9]{1,12}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when the
    header is absent or not understood. Never raises."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
