"""WordPress releases for the lab: the system's Debian package, and the other Debian release's.

Debian 12 (bookworm) ships WordPress 6.1, Debian 13 (trixie) ships 6.8; both packages are
architecture-independent. The lab serves the system's ``/usr/share/wordpress`` as is; the other
release is fetched with ``apt-get download`` against a scratch sources folder (the system's apt
configuration, lists and cache are not touched), unpacked with ``dpkg-deb -x`` and kept under
the cache folder (``var/wplab-cache`` of the repository, or ``$WPLAB_CACHE``), so a run downloads
it once. Its relative symlinks point into ``/usr/share`` (getID3, underscore, lodash...): they are
resolved against the real ``/usr/share/wordpress/...`` location, where the system's own
``wordpress`` package has already installed the targets. Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

WORDPRESS_SOURCE = Path("/usr/share/wordpress")
#: The Debian suite that ships each WordPress release the lab knows.
SUITES = {"6.1": "bookworm", "6.8": "trixie"}
CACHE_DIR = Path(os.environ.get("WPLAB_CACHE")
                 or Path(__file__).resolve().parents[2] / "var" / "wplab-cache")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_TIMEOUT = 300.0  # s for apt-get update or download; seconds here on a good mirror


class ReleaseError(RuntimeError):
    """A WordPress release could not be provided; the message says which step failed."""


def release_of(tree: Path) -> str:
    """"6.1" for a tree whose wp-includes/version.php says 6.1.9."""
    text = (tree / "wp-includes" / "version.php").read_text(errors="replace")
    found = re.search(r"^\$wp_version\s*=\s*'(\d+)\.(\d+)", text, re.MULTILINE)
    if found is None:
        raise ReleaseError(f"no $wp_version in {tree}/wp-includes/version.php")
    return f"{found.group(1)}.{found.group(2)}"


def system_release() -> str:
    return release_of(WORDPRESS_SOURCE)


def wordpress_tree(release: str | None = None) -> Path:
    """A WordPress tree of ``release`` ("6.1", "6.8"; None: the system's), ready for cp -rL."""
    if release is None or release == system_release():
        return WORDPRESS_SOURCE
    if release not in SUITES:
        raise ReleaseError(f"WordPress {release!r}: the lab knows {', '.join(SUITES)}")
    tree = CACHE_DIR / f"wordpress-{release}" / "usr" / "share" / "wordpress"
    if not (CACHE_DIR / f"wordpress-{release}.ready").exists():
        _fetch(release, CACHE_DIR / f"wordpress-{release}")
        (CACHE_DIR / f"wordpress-{release}.ready").write_text(release_of(tree) + "\n")
    return tree


def _mirror() -> str:
    """The system's Debian mirror (first URI ending in /debian), else deb.debian.org."""
    if env := os.environ.get("WPLAB_DEBIAN_MIRROR"):
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for uri in re.findall(r"(?:^URIs:|^deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.MULTILINE):
            if uri.rstrip("/").endswith("/debian"):
                return str(uri).rstrip("/")
    return DEFAULT_MIRROR


def _fetch(release: str, target: Path) -> None:
    """Downloads and unpacks the ``wordpress`` package of ``release``'s suite into target."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ReleaseError(f"WordPress {release} needs apt-get and dpkg-deb (a Debian system)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-", dir=CACHE_DIR) as scratch_name:
        scratch = Path(scratch_name)
        for sub in ("lists/partial", "cache/archives/partial", "parts"):
            (scratch / sub).mkdir(parents=True)
        (scratch / "parts" / "lab.sources").write_text(
            f"Types: deb\nURIs: {_mirror()}\nSuites: {SUITES[release]}\nComponents: main\n"
            f"Signed-By: {KEYRING}\n")
        options = ["-o", "Dir::Etc::SourceList=/dev/null",
                   "-o", f"Dir::Etc::SourceParts={scratch / 'parts'}",
                   "-o", f"Dir::State::Lists={scratch / 'lists'}",
                   "-o", f"Dir::Cache={scratch / 'cache'}",
                   "-o", "APT::Sandbox::User=root",  # the download lands in a root-owned folder
                   "-q"]
        for step in (["update"], ["download", "wordpress"]):
            try:
                done = subprocess.run(["apt-get", *options, *step], cwd=scratch, text=True,
                                      capture_output=True, stdin=subprocess.DEVNULL,
                                      timeout=APT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise ReleaseError(f"apt-get {step[0]} for WordPress {release} "
                                   f"({SUITES[release]}) ran over {APT_TIMEOUT:.0f} s") from None
            if done.returncode != 0:
                last = (done.stderr.strip() or done.stdout.strip() or "-").splitlines()[-1]
                raise ReleaseError(f"apt-get {step[0]} for WordPress {release} "
                                   f"({SUITES[release]}) exited {done.returncode}: {last}")
        packages = sorted(scratch.glob("wordpress_*_all.deb"))
        if not packages:
            raise ReleaseError(f"apt-get download left no wordpress_*_all.deb in {scratch}")
        unpacked = scratch / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(packages[-1]), str(unpacked)], check=True,
                       capture_output=True)
        _resolve_links(unpacked)
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)


def _resolve_links(root: Path) -> list[Path]:
    """Points each symlink of an unpacked package where it points once installed; a link whose
    target this system lacks is removed (nothing the lab uses: .htaccess, getID3 on a system
    without it). Returns the removed links."""
    removed = []
    for link in [p for p in root.rglob("*") if p.is_symlink()]:
        installed = Path("/") / link.relative_to(root)
        target = Path(os.path.normpath(installed.parent / os.readlink(link)))
        link.unlink()
        if target.exists():
            link.symlink_to(target)
        else:
            removed.append(installed)
    return removed
