"""The lab's processes: how they are waited for, stopped and read, and the lab's error.

Every process of the lab (MariaDB, php -S, php-fpm, nginx) runs in a session of its own, is
waited for until it answers, and is stopped by its PID and process group, never by name. Its
failures are ``LabError``s naming what failed, with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT = 30.0  # s for MariaDB or a web server to answer; both take under a second here
STOP_TIMEOUT = 10.0  # s to wait after each signal before sending a harder one


class LabError(RuntimeError):
    """Something in the lab did not come up, run or stop; the message names it and shows its log."""


def log_tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log from offset on, without PHP deprecation noise."""
    try:
        text = path.read_bytes()[offset:].decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join([ln for ln in text.splitlines() if "PHP Deprecated" not in ln][-lines:]) or "-"


def wait_until_up(what: str, ready: Callable[[], bool], alive: Callable[[], bool],
                  log: Path) -> None:
    """Polls ready() until it holds; else raises naming `what`, with the tail of its log."""
    deadline, delay = time.monotonic() + START_TIMEOUT, 0.01
    while not ready():
        if not alive() or time.monotonic() > deadline:
            state = "exited" if not alive() else f"is not up after {START_TIMEOUT:.0f} s"
            raise LabError(f"{what} {state}; tail of {log}:\n{log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def stop_group(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Stops a process started with start_new_session=True and whatever is left in its group.

    php -S wants SIGINT: it then reaps its workers (on SIGTERM it dies and orphans them). Waiting
    without reaping (WNOWAIT) keeps the PID and group ours until the final SIGKILL."""
    if process.returncode is None:
        for sig in (first, signal.SIGTERM):
            os.killpg(process.pid, sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while not os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            else:
                break
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never proxied


def http_status(url: str) -> int | None:
    """The status of a GET, or None while nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except OSError:
        return None
