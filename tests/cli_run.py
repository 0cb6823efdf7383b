"""Running ``userrelay`` as a user would: a child process, its exit code and its output.

Every run is checked for a traceback: a user never sees one, whatever they typed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import support

#: Long enough for a loaded machine; a command that hangs fails the test here.
LIMIT = 30.0


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def userrelay(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
              stdin: str | None = None) -> Result:
    """``userrelay ARGS`` in ``cwd``; fails the test on a traceback or a hang."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("USERRELAY_CONFIG", "USERRELAY_ADMIN_TOKEN", "NOTIFY_SOCKET")}
    environment.update(env or {})
    done = subprocess.run([sys.executable, "-m", "relay", *map(str, args)], cwd=cwd,
                          env=environment, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=LIMIT, check=False)
    support.record("cli", done.stdout + done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return Result(done.returncode, done.stdout, done.stderr)
