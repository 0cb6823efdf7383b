"""The CPU the lab's parts spend, for ``bench/wordpress.py``: what the plugin costs site A's
own processes, apart from what the relay beside it on this machine costs.

On two shared cores the relay (and nginx in front of it) take CPU from site A's visitors that
they would not take on a host of their own, so the site's throughput mixes both. The CPU time
of each part's processes (utime + stime from ``/proc``, children that ended included) measured
around each plugin state's cost phase says what each part spent per create.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

# A part of the lab: the sessions whose processes are all its own (a web server started in a
# session of its own, with its workers), and single processes (the relay).
Part = tuple[set[int], set[int]]


def cpu_seconds(sessions: set[int], pids: set[int]) -> float:
    """CPU seconds of every process in ``sessions`` and of ``pids``, as far as they ran."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        pid = int(stat.parent.name)
        # After "(comm)": state ppid pgrp session ... utime(14) stime cutime cstime (man 5 proc)
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[3]) in sessions or pid in pids:
            total += sum(int(x) for x in fields[11:15])
    return total / TICKS


class Meter:
    """Readings of each part's CPU seconds; ``parts`` name how to find each part's processes
    when read (a restarted relay has a new pid)."""

    def __init__(self, parts: dict[str, Callable[[], Part]]) -> None:
        self.parts = parts

    def reading(self) -> dict[str, float]:
        return {name: cpu_seconds(*find()) for name, find in self.parts.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}
