"""A certificate authority made for a test, and certificates it signs (openssl's command line).

``LocalCA(folder)`` makes the authority; ``issue(name, hosts, days=..., expired=False)`` writes
``name.crt`` and ``name.key`` for the given DNS names and IP addresses and returns their paths.
An expired certificate is dated in the past by ``openssl ca -startdate/-enddate``, so no clock
is faked. Used by the relay's TLS tests and by the lab's HTTPS site.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} exited {done.returncode}: {done.stderr.strip()}")


class LocalCA:
    """An authority under ``folder``: ``ca.crt`` is what a client is told to trust."""

    def __init__(self, folder: Path, name: str = "UserRelay test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = folder / "ca.crt", folder / "ca.key"
        _run("req", "-x509", *KEY, "-days", "30", "-subj", f"/CN={name}",
             "-keyout", str(self.key), "-out", str(self.cert))
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text("1000\n")
        self._config = folder / "ca.cnf"
        self._config.write_text("\n".join([
            "[ca]", "default_ca = lab", "[lab]", f"dir = {folder}",
            f"database = {folder}/index.txt", f"new_certs_dir = {folder}",
            f"serial = {folder}/serial", f"certificate = {self.cert}",
            f"private_key = {self.key}", "default_md = sha256", "policy = any",
            "copy_extensions = copy", "unique_subject = no", "x509_extensions = leaf",
            "[any]", "commonName = supplied",
            "[leaf]", "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature", "extendedKeyUsage = serverAuth",
            "subjectKeyIdentifier = hash", "authorityKeyIdentifier = keyid", ""]))

    def issue(self, name: str, hosts: list[str], days: int = 30,
              expired: bool = False) -> tuple[Path, Path]:
        """A server certificate for ``hosts`` (names and IP addresses); its cert and key files."""
        cert, key, request = (self.folder / f"{name}.crt", self.folder / f"{name}.key",
                              self.folder / f"{name}.csr")
        names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
        _run("req", "-new", *KEY, "-subj", f"/CN={hosts[0]}", "-addext",
             f"subjectAltName={names}", "-keyout", str(key), "-out", str(request))
        dates = (["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"] if expired
                 else ["-days", str(days)])
        _run("ca", "-batch", "-notext", "-config", str(self._config), "-in", str(request),
             "-out", str(cert), *dates)
        return cert, key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
