"""Start Pebble (and pebble-challtestsrv as its DNS server) on free loopback ports.

Pebble is the ACME test server of the Let's Encrypt project. Two versions are supported:

- ``"2.10"``: Pebble 2.10.1, with ARI (RFC 9773), profiles and ``replaces`` checking. certsmith's
  ``scripts/bootstrap.sh`` builds it into :func:`pebble_cache_dir`; elsewhere install it there with
  ``go install`` (see :func:`find_pebble`).
- ``"2.4"``: Debian's ``pebble`` package in ``/usr/bin``, without ARI or profiles.

:class:`PebbleServer` writes a throwaway CA and server certificate, picks free ports on 127.0.0.1,
starts both programs, waits until they listen and stops them on :meth:`PebbleServer.stop`. It also
reads Pebble's log, so a test can check what a client did at the CA: the orders it created, the
certificates issued, ARI replacements and the requests to any endpoint.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


PEBBLE_VERSION = "2.10.1"
"""The modern Pebble release the test kit runs as version ``"2.10"``."""

PebbleVersion = Literal["2.10", "2.4"]
"""``"2.10"``: Pebble 2.10.1 from :func:`pebble_cache_dir`; ``"2.4"``: Debian's ``/usr/bin/pebble``."""

DEBIAN_BIN = Path("/usr/bin")
_GO_MODULE = "github.com/letsencrypt/pebble/v2"


class PebbleNotFound(RuntimeError):
    """The programs of the requested Pebble version are not installed; the message says how to get them."""


@dataclass(frozen=True)
class PebbleBinaries:
    """The two programs of one Pebble version."""

    version: PebbleVersion
    pebble: Path
    challtestsrv: Path


def pebble_cache_dir() -> Path:
    """Where Pebble 2.10.1 lives: ``$CERTSMITH_PEBBLE_DIR``, else ``~/.cache/certsmith/pebble-2.10.1``."""
    configured = os.environ.get("CERTSMITH_PEBBLE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "certsmith" / f"pebble-{PEBBLE_VERSION}"


def find_pebble(version: PebbleVersion = "2.10") -> PebbleBinaries:
    """The installed programs of Pebble ``version``, or :class:`PebbleNotFound` saying how to install them."""
    if version == "2.10":
        directory = pebble_cache_dir()
        hint = (
            "run scripts/bootstrap.sh in a certsmith clone, or install it with Go 1.24 or newer: "
            f"GOBIN={directory} go install {_GO_MODULE}/cmd/pebble@v{PEBBLE_VERSION} "
            f"{_GO_MODULE}/cmd/pebble-challtestsrv@v{PEBBLE_VERSION} (CERTSMITH_PEBBLE_DIR chooses another directory)"
        )
    elif version == "2.4":
        directory = DEBIAN_BIN
        hint = "install the Debian package 'pebble'"
    else:
        raise ValueError(f"unknown Pebble version {version!r}; use '2.10' or '2.4'")
    binaries = PebbleBinaries(version, directory / "pebble", directory / "pebble-challtestsrv")
    missing = [str(path) for path in (binaries.pebble, binaries.challtestsrv) if not os.access(path, os.X_OK)]
    if missing:
        raise PebbleNotFound(f"Pebble {version} is not installed ({' and '.join(missing)} missing); {hint}")
    return binaries


def default_challtestsrv() -> Path:
    """Pebble 2.10's ``pebble-challtestsrv`` when it is installed, else the one on ``PATH`` (Debian's)."""
    try:
        return find_pebble("2.10").challtestsrv
    except PebbleNotFound as modern_missing:
        found = shutil.which("pebble-challtestsrv")
        if found is None:
            raise PebbleNotFound(f"no pebble-challtestsrv found: {modern_missing}") from None
        return Path(found)


@functools.cache
def _usage_flags(binary: Path) -> frozenset[str]:
    """The flag names a Go program lists in its ``-h`` usage text."""
    usage = subprocess.run([str(binary), "-h"], capture_output=True, text=True, timeout=30, check=False)
    return frozenset(re.findall(r"^ {2}-(\w[\w-]*)", usage.stdout + usage.stderr, re.MULTILINE))


@dataclass
class ChallTestSrv:
    """A running ``pebble-challtestsrv`` used as Pebble's DNS server.

    ``binary`` defaults to :func:`default_challtestsrv`. Both versions' flags are handled: 2.10 calls
    the DNS listener ``-dnsserver`` (2.4: ``-dns01``) and adds a DoH listener, which stays off.
    """

    dns_port: int
    management_port: int
    process: subprocess.Popen[bytes] | None = None
    binary: Path | None = None

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
        binary = self.binary = self.binary or default_challtestsrv()
        flags = _usage_flags(binary)
        args = [
            str(binary),
            "-http01", "",
            "-https01", "",
            "-tlsalpn01", "",
            "-dnsserver" if "dnsserver" in flags else "-dns01", self.dns_address,
            "-management", f"{LOOPBACK}:{self.management_port}",
            "-defaultIPv4", LOOPBACK,
            "-defaultIPv6", "",
        ]
        if "doh" in flags:
            args += ["-doh", ""]  # its default listens on every interface
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


@dataclass(frozen=True)
class PebbleProfile:
    """A certificate profile for Pebble 2.10 to offer in its directory's ``meta.profiles``."""

    description: str
    validity: datetime.timedelta

    def __post_init__(self) -> None:
        if self.validity < datetime.timedelta(seconds=1):
            raise ValueError(f"a profile's validity must be at least one second, not {self.validity}")

    def to_config(self) -> dict[str, Any]:
        """The profile as Pebble's config file spells it (``validityPeriod`` in whole seconds)."""
        return {"description": self.description, "validityPeriod": int(self.validity.total_seconds())}


_HANDLER_CALL = r"^Pebble \S+ \S+ ([A-Z]+) (\S+) -> calling handler\(\)$"
_ORDER_ADDED = r'Added order "([^"]+)" to the db'
_ACCOUNT_ADDED = r"There are now (\d+) accounts in memory"
_CERT_ISSUED = r"Issued certificate serial ([0-9a-f]+) for order (\S+)"
_REPLACEMENT = r'ARI: order "([^"]+)" is a replacement of "([^"]+)"'


@dataclass
class PebbleServer:
    """A Pebble ACME server on loopback, with pebble-challtestsrv as its resolver.

    ``version`` chooses the Pebble (see :data:`PebbleVersion`; ``binaries`` overrides where it is).
    ``env`` adds Pebble environment knobs (``PEBBLE_WFE_NONCEREJECT`` ...); validation runs
    without Pebble's random delay and never reuses an authorization unless ``env`` says otherwise;
    ``config`` adds keys to Pebble's JSON config (``externalAccountMACKeys`` ...);
    ``profiles`` are the certificate profiles Pebble 2.10 offers. Without them it offers one,
    ``default`` (90 days); with several, an order that names none gets one chosen at random.
    ``dns_server`` makes Pebble resolve through another server (e.g. BIND) instead
    of the challtestsrv it starts.
    """

    workdir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    dns_server: str | None = None
    version: PebbleVersion = "2.10"
    profiles: Mapping[str, PebbleProfile] = field(default_factory=dict)
    binaries: PebbleBinaries | None = None
    http_port: int = 0
    tls_port: int = 0
    listen_port: int = 0
    management_port: int = 0
    challtestsrv: ChallTestSrv | None = None
    ca_bundle: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _tempdir: tempfile.TemporaryDirectory[str] | None = None
    _resource_paths: dict[str, str] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{LOOPBACK}:{self.listen_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{LOOPBACK}:{self.management_port}"

    @property
    def log_path(self) -> Path:
        """Pebble's log file (its standard output and error)."""
        if self.workdir is None:
            raise RuntimeError("Pebble has not been started")
        return self.workdir / "pebble.log"

    def start(self) -> PebbleServer:
        binaries = self.binaries = self.binaries or find_pebble(self.version)
        self.version = binaries.version
        if self.profiles and binaries.version == "2.4":
            raise ValueError("Pebble 2.4 has no certificate profiles; use version '2.10' or drop profiles")
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="certsmith-pebble-")
            self.workdir = Path(self._tempdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, cert, key = write_test_ca(self.workdir / "tls")
        if self.dns_server is None:
            self.challtestsrv = ChallTestSrv(
                free_port(kind=socket.SOCK_DGRAM), free_port(), binary=binaries.challtestsrv
            )
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
        if self.profiles:
            settings["profiles"] = {name: profile.to_config() for name, profile in self.profiles.items()}
        settings.update(self.config)
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps({"pebble": settings}, indent=2))
        process_env = dict(os.environ)
        process_env.setdefault("PEBBLE_VA_NOSLEEP", "1")
        # Pebble reuses a valid authorization half the time by default; a test that checks what a
        # solver did must see the challenge every time.
        process_env.setdefault("PEBBLE_AUTHZREUSE", "0")
        process_env.update(self.env)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [str(binaries.pebble), "-config", str(config_path), "-dnsserver", dns_server],
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

    def _fetch(self, request: urllib.request.Request | str) -> bytes:
        try:
            with urllib.request.urlopen(request, context=self._ssl_context(), timeout=10) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            url = request if isinstance(request, str) else request.full_url
            raise RuntimeError(f"Pebble answered HTTP {exc.code} to {url}: {_problem_detail(exc.read())}") from None

    def directory(self) -> dict[str, Any]:
        """The ACME directory document (``renewalInfo`` and ``meta.profiles`` show what this Pebble offers)."""
        document: dict[str, Any] = json.loads(self._fetch(self.directory_url))
        return document

    def management_get(self, path: str) -> bytes:
        """GET a management endpoint such as ``/roots/0`` or ``/cert-status-by-serial/<hex>``."""
        return self._fetch(self.management_url + path)

    def management_post(self, path: str, body: Mapping[str, Any]) -> bytes:
        """POST ``body`` as JSON to a management endpoint such as ``/set-renewal-info/``."""
        request = urllib.request.Request(
            self.management_url + path,
            data=json.dumps(body, default=_rfc3339).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        return self._fetch(request)

    def set_renewal_info(self, cert_pem: bytes | str, ari: Mapping[str, Any] | str) -> None:
        """Make Pebble 2.10 answer ARI requests for ``cert_pem`` with ``ari`` from now on.

        ``cert_pem`` is the certificate (only its first PEM block is read, so a full chain will do).
        ``ari`` is the renewalInfo document, e.g. ``{"suggestedWindow": {"start": t1, "end": t2}}``
        with aware datetimes or RFC 3339 strings, or raw text, which need not be valid JSON, to
        see how a client copes with a broken answer. Pebble still sends ``Retry-After: 21600``.
        """
        if self.version == "2.4":
            raise RuntimeError("Pebble 2.4 has no ARI; start the server with version '2.10'")
        text = ari if isinstance(ari, str) else json.dumps(ari, default=_rfc3339)
        pem = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
        self.management_post("/set-renewal-info/", {"Certificate": pem, "ARIResponse": text})

    def root_pems(self) -> list[bytes]:
        """PEM of root 0 and of every alternate root Pebble advertises."""
        roots = [self.management_get("/roots/0")]
        alternates = int(self.env.get("PEBBLE_ALTERNATE_ROOTS", "0"))
        roots.extend(self.management_get(f"/roots/{n}") for n in range(1, alternates + 1))
        return roots

    # -- Pebble's log ----------------------------------------------------------------------

    def log_mark(self) -> int:
        """The current end of Pebble's log; pass it as ``since`` to look only at what follows."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """Pebble's log from the mark ``since`` (the start by default)."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def orders_created(self, since: int = 0) -> list[str]:
        """IDs of the orders Pebble created, oldest first; an order's ID is the last part of its URL."""
        return re.findall(_ORDER_ADDED, self.log_text(since))

    def accounts_created(self, since: int = 0) -> int:
        """How many accounts Pebble created (a refused or repeated ``newAccount`` creates none)."""
        return len(re.findall(_ACCOUNT_ADDED, self.log_text(since)))

    def certificates_issued(self, since: int = 0) -> dict[int, str]:
        """Serial number of every certificate Pebble issued, with the ID of the order it was issued for."""
        return {int(serial, 16): order for serial, order in re.findall(_CERT_ISSUED, self.log_text(since))}

    def replacements(self, since: int = 0) -> list[tuple[str, str]]:
        """``(new order ID, replaced order ID)`` for every newOrder Pebble 2.10 accepted with ``replaces``."""
        return [(new, old) for new, old in re.findall(_REPLACEMENT, self.log_text(since))]

    def request_count(self, resource: str, since: int = 0, *, method: str | None = None) -> int:
        """How many requests for ``resource`` reached Pebble's handlers, accepted or refused.

        ``resource`` is a directory field (``newAccount``, ``newOrder``, ``renewalInfo``, ``revokeCert``,
        ``keyChange``, ``newNonce``) or a path as Pebble logs it, such as ``/my-order/`` or ``/dir``.
        ``method`` (``GET``, ``POST`` ...) narrows the count.
        """
        path = resource if resource.startswith("/") else self._resource_path(resource)
        return sum(
            1
            for logged_method, logged_path in re.findall(_HANDLER_CALL, self.log_text(since), re.MULTILINE)
            if logged_path.rstrip("/") == path.rstrip("/") and method in (None, logged_method)
        )

    def _resource_path(self, resource: str) -> str:
        if self._resource_paths is None:
            self._resource_paths = {
                name: urllib.parse.urlsplit(url).path
                for name, url in self.directory().items()
                if isinstance(url, str) and url.startswith("https://")
            }
        try:
            return self._resource_paths[resource]
        except KeyError:
            offered = ", ".join(sorted(self._resource_paths))
            raise ValueError(f"Pebble's directory has no {resource!r}; it has {offered}") from None

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


def _problem_detail(body: bytes) -> str:
    """The ``detail`` of a problem document, else the body as text."""
    text = body.decode(errors="replace").strip()
    try:
        problem = json.loads(text)
    except ValueError:
        return text
    return str(problem.get("detail", text)) if isinstance(problem, dict) else text


def _rfc3339(value: object) -> str:
    """JSON for aware datetimes, as RFC 3339 in UTC."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise TypeError(f"give {value} a time zone; ARI times are absolute")
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")
