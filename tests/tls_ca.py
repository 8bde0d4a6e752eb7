"""A throwaway certificate authority for tests, made with the ``openssl`` command line: a CA, server and client certs.

Keys are EC P-256 (fast to make); certificates carry the extensions a strict verifier wants (CA basic constraints,
key identifiers, key usage), so they pass Python's default TLS checks and Mosquitto's alike.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")

# A minimal config of our own, so the system's openssl.cnf (which differs between distributions) plays no part.
_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
{san}
"""


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TestCA:
    """A CA in ``directory`` that issues server and client certificates (valid from now for two days)."""

    __test__ = False  # not a test class, despite the name

    directory: Path
    cert: Path
    key: Path

    def server(self, name: str = "server", *, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> KeyPair:
        """Issue a server certificate whose SAN lists ``hosts`` (IP addresses as IP:, names as DNS:)."""
        san = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
        return self._issue(name, common_name=hosts[0], usage="serverAuth", san=f"subjectAltName = {san}")

    def client(self, common_name: str) -> KeyPair:
        """Issue a client certificate for ``common_name`` (Mosquitto's username with use_identity_as_username)."""
        return self._issue(f"client-{common_name}", common_name=common_name, usage="clientAuth", san="")

    def _issue(self, name: str, *, common_name: str, usage: str, san: str) -> KeyPair:
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage, san=san), encoding="utf-8")
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}", "-config", self.directory / "req.cnf",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", extensions, "-extensions", "ext", "-out", cert,
        )  # fmt: skip
        return KeyPair(cert, key)


def make_ca(directory: Path, name: str = "venue-agent test CA") -> TestCA:
    """Create a self-signed CA in ``directory`` (made if missing); skip the test when openssl is not installed."""
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "req.cnf"
    config.write_text(_REQ_CONFIG, encoding="utf-8")
    ca = TestCA(directory, directory / "ca.crt", directory / "ca.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca.key, "-out", ca.cert, "-subj", f"/CN={name}", "-days", "2", "-sha256",
        "-config", config, "-extensions", "ca_ext",
    )  # fmt: skip
    return ca


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"openssl {args[0]} failed ({done.returncode}): {done.stderr.strip()}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture(name="test_ca")
def _test_ca(tmp_path: Path) -> TestCA:
    """Return a fresh CA under the test's tmp dir."""
    return make_ca(tmp_path / "ca")
