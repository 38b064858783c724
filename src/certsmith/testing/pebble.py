"""Start Pebble (and pebble-challtestsrv as its DNS server) on free loopback ports.

Pebble is the ACME test server of the Let's Encrypt project; Debian ships it as the
``pebble`` package together with ``pebble-challtestsrv``. :class:`PebbleServer` writes
a throwaway CA and server certificate, picks free ports on 127.0.0.1, starts both
programs, waits until the directory answers and stops them on :meth:`stop`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK, kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free for both TCP and UDP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as sock:
                sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found on " + host)


def write_test_ca(directory: Path, hostnames: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path, Path]:
    """Write a CA and a server certificate for ``hostnames`` and 127.0.0.1.

    Returns ``(ca_pem, server_cert_pem, server_key_pem)``.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certsmith test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {host}:{port} within {timeout:.0f}s")


@dataclass
class ChallTestSrv:
    """A running ``pebble-challtestsrv`` used as Pebble's DNS server."""

    dns_port: int
    management_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def management_url(self) -> str:
        return f"http://{LOOPBACK}:{self.management_port}"

    @property
    def dns_address(self) -> str:
        return f"{LOOPBACK}:{self.dns_port}"

    def call(self, path: str, body: Mapping[str, Any]) -> bytes:
        """POST ``body`` as JSON to a management endpoint such as ``/set-txt``."""
        request = urllib.request.Request(
            self.management_url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data: bytes = response.read()
            return data

    def set_txt_values(self, fqdn: str, values: list[str]) -> None:
        """Serve exactly ``values`` as the TXT records of ``fqdn`` (absolute name).

        Its signature fits the ``on_change`` hook of the cloud DNS emulators, so their
        records become visible to Pebble.
        """
        self.call("/clear-txt", {"host": fqdn})
        for value in values:
            self.call("/set-txt", {"host": fqdn, "value": value})

    def start(self, log: Path) -> None:
        binary = shutil.which("pebble-challtestsrv")
        if binary is None:
            raise RuntimeError("pebble-challtestsrv not found; install the Debian package 'pebble'")
        args = [
            binary,
            "-http01", "",
            "-https01", "",
            "-tlsalpn01", "",
            "-dns01", self.dns_address,
            "-management", f"{LOOPBACK}:{self.management_port}",
            "-defaultIPv4", LOOPBACK,
            "-defaultIPv6", "",
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _wait_for_port(LOOPBACK, self.management_port, self.process, "pebble-challtestsrv", 15)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate a server process we started, killing it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class PebbleServer:
    """A Pebble ACME server on loopback, with pebble-challtestsrv as its resolver.

    ``env`` adds Pebble environment knobs (``PEBBLE_WFE_NONCEREJECT`` ...);
    ``config`` adds keys to Pebble's JSON config (``externalAccountMACKeys`` ...).
    ``dns_server`` makes Pebble resolve through another server (e.g. BIND) instead
    of the challtestsrv it starts.
    """

    workdir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    dns_server: str | None = None
    http_port: int = 0
    tls_port: int = 0
    listen_port: int = 0
    management_port: int = 0
    challtestsrv: ChallTestSrv | None = None
    ca_bundle: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{LOOPBACK}:{self.listen_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{LOOPBACK}:{self.management_port}"

    def start(self) -> PebbleServer:
        binary = shutil.which("pebble")
        if binary is None:
            raise RuntimeError("pebble not found; install the Debian package 'pebble'")
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="certsmith-pebble-")
            self.workdir = Path(self._tempdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, cert, key = write_test_ca(self.workdir / "tls")
        log = self.workdir / "pebble.log"
        if self.dns_server is None:
            self.challtestsrv = ChallTestSrv(free_port(kind=socket.SOCK_DGRAM), free_port())
            self.challtestsrv.start(self.workdir / "challtestsrv.log")
            dns_server = self.challtestsrv.dns_address
        else:
            dns_server = self.dns_server
        self.listen_port = self.listen_port or free_port()
        self.management_port = self.management_port or free_port()
        self.http_port = self.http_port or free_port()
        self.tls_port = self.tls_port or free_port()
        settings: dict[str, Any] = {
            "listenAddress": f"{LOOPBACK}:{self.listen_port}",
            "managementListenAddress": f"{LOOPBACK}:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        settings.update(self.config)
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps({"pebble": settings}, indent=2))
        process_env = dict(os.environ)
        process_env.setdefault("PEBBLE_VA_NOSLEEP", "1")
        process_env.update(self.env)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-config", str(config_path), "-dnsserver", dns_server],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=process_env,
                cwd=self.workdir,
            )
        try:
            _wait_for_port(LOOPBACK, self.listen_port, self.process, "pebble", 30)
            _wait_for_port(LOOPBACK, self.management_port, self.process, "pebble", 30)
        except Exception:
            self.stop()
            raise
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.ca_bundle is not None
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def management_get(self, path: str) -> bytes:
        """GET a management endpoint such as ``/roots/0`` or ``/cert-status-by-serial/<hex>``."""
        with urllib.request.urlopen(
            self.management_url + path, context=self._ssl_context(), timeout=10
        ) as response:
            data: bytes = response.read()
            return data

    def root_pems(self) -> list[bytes]:
        """PEM of root 0 and of every alternate root Pebble advertises."""
        roots = [self.management_get("/roots/0")]
        alternates = int(self.env.get("PEBBLE_ALTERNATE_ROOTS", "0"))
        roots.extend(self.management_get(f"/roots/{n}") for n in range(1, alternates + 1))
        return roots

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        if self.challtestsrv is not None:
            self.challtestsrv.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> PebbleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
