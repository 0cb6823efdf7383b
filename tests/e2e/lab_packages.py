"""The lab's package check: whether Debian's WordPress, PHP and MariaDB are installed, and
installing them when they are not (as root, through apt-get).

The only part of the lab that changes the system: it installs packages and nothing else. It
never starts a service (mariadb-server's own MariaDB stays stopped: a ``policy-rc.d`` that exits
101 is in place while installing, removed afterwards only if it was written here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# faketime: a site whose clock is off (Site.set_clock_offset)
PACKAGES = ["wordpress", "php-cli", "php-mysql", "php-curl", "php-xml", "php-mbstring",
            "mariadb-server", "faketime"]


def ensure_packages(packages: list[str] | None = None) -> str | None:
    """Installs Debian's WordPress, PHP and MariaDB (or ``packages``) if missing (as root);
    returns None when WordPress can run here, else a one-line reason (for pytest.skip). No
    service is started by the installation (policy-rc.d)."""
    packages = packages or PACKAGES
    if shutil.which("dpkg-query") is None:
        return f"not a Debian system: the lab needs Debian's {' '.join(packages)}"
    listed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
                            capture_output=True, text=True).stdout.splitlines()
    installed = {line.split()[0] for line in listed if line.endswith(" installed")}
    if not (missing := [name for name in packages if name not in installed]):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"Debian packages missing ({' '.join(missing)}); installing needs root and apt-get"
    # invoke-rc.d asks policy-rc.d; exit 101 means "do not start", so mariadb-server's postinst
    # leaves the system server stopped. A policy-rc.d that someone else put there stays.
    policy = Path("/usr/sbin/policy-rc.d")
    if created := not policy.exists():
        policy.write_text("#!/bin/sh\n# written by tests/e2e/lab_packages.py while installing\n"
                          "exit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    try:
        for args in (["update"], ["install", "-y", "--no-install-recommends", *missing]):
            done = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                last = (done.stderr.strip() or done.stdout.strip() or "-").splitlines()[-1]
                return f"apt-get {args[0]} failed (exit {done.returncode}): {last}"
        return None
    finally:
        if created:
            policy.unlink(missing_ok=True)
