"""The lab's MariaDB: one private server of Debian's mariadbd, listening only on a socket under
the lab's directory (no TCP), its data, configuration and log there too, and SQL run on it
through the ``mariadb`` client.

It must not touch the system's MariaDB or its configuration (every command runs with
``--no-defaults``), and it is stopped by its PID and process group (lab_processes).
"""

from __future__ import annotations

import re
import signal
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tests.e2e.lab_processes import LabError, stop_group, wait_until_up


class MariaDB:
    """A private MariaDB in ``folder`` (data, my.cnf, socket), logging to ``log``."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.folder, self.log = folder, log
        self.socket = folder / "mariadb.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether it was started and not stopped since."""
        return self._process is not None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Makes a fresh data directory and starts the server; returns once it answers a ping."""
        data, config = self.folder / "data", self.folder / "my.cnf"
        data.mkdir(parents=True, exist_ok=True)
        install = subprocess.Popen(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output = install.communicate()[0].decode(errors="replace")
        finally:  # on Ctrl-C too: the bootstrap mariadbd it runs must not outlive the lab
            stop_group(install, signal.SIGTERM)
        if install.returncode != 0:
            raise LabError(f"mariadb-install-db exited {install.returncode}:\n{output}")
        config.write_text("\n".join([
            "[mysqld]", f"datadir={data}", f"socket={self.socket}", "skip-networking",
            f"pid-file={self.folder}/mariadbd.pid", f"log-error={self.log}",
            f"tmpdir={self.folder}", "user=root", "skip-log-bin",
            "innodb_flush_log_at_trx_commit=2", "innodb_buffer_pool_size=64M", ""]))
        self._process = subprocess.Popen(["mariadbd", f"--defaults-file={config}"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        ping = ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"]
        wait_until_up("MariaDB", lambda: subprocess.run(ping, capture_output=True).returncode == 0,
                      lambda: self._process is not None and self._process.poll() is None,
                      self.log)

    def query(self, database: str, sql: str) -> list[dict[str, str | None]]:
        """Runs SQL with the mariadb client; returns the rows of all result sets (NULL as None)."""
        done = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "--user=root", "--xml",
             f"--database={database}", f"--execute={sql}"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = (done.stderr.strip() or "no output").splitlines()[-1]
            raise LabError(f"SQL on database {database!r} failed: {reason}\nSQL: {sql}")
        body = re.sub(r"<\?xml[^>]*\?>", "", done.stdout)  # one declaration per result set

        rows = ElementTree.fromstring(f"<all>{body}</all>").findall("resultset/row")  # noqa: S314
        nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
        return [{field.get("name", ""): None if field.get(nil) == "true" else (field.text or "")
                 for field in row.findall("field")} for row in rows]

    def stop(self) -> None:
        """Stops the server (mariadbd shuts down cleanly on SIGTERM); no-op when not running."""
        if self._process is not None:
            stop_group(self._process, signal.SIGTERM)
            self._process = None
