"""Benchmark certsmith against certbot, lego and acme-tiny on the same local Pebble.

Every run gets a fresh Pebble 2.4 (with pebble-challtestsrv as its DNS, both on free
127.0.0.1 ports) started with the same settings, and a fresh state directory, so that
each batch includes account registration and nothing leaks between clients. A batch
issues N certificates (default 10) for two names each over http-01, the way a user of
that client would: N sequential invocations; for certsmith also one process issuing
all N concurrently through ``Manager.issue_many``.

Measured per batch: wall time (median of K repetitions), CPU time and peak RSS of the
client processes (``os.wait4`` rusage of each child, which includes its own children),
and ACME requests per certificate, counted from Pebble's log (Pebble logs
``<METHOD> <path> -> calling handler()`` for every request it serves). Each
certificate is parsed and checked; a batch that produced fewer than N correct
certificates is reported as failed. ``--help`` start-up time is measured separately.

Nothing is installed: clients that are not on PATH are skipped with a note.

    /work/venv/bin/python bench/run.py            # all clients, K=3
    /work/venv/bin/python bench/run.py -k 1 --certs 3 --clients certsmith-cli,lego
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certsmith.testing.pebble import LOOPBACK, PebbleServer

BENCH_DIR = Path(__file__).resolve().parent
EMAIL = "bench@example.com"
DOMAIN = "bench.test"
TIMES = "\u00d7"  # the multiplication sign, for ratios
PEBBLE_ENV = {
    # Same for every client: no random validation sleep, no nonce rejections and no
    # authorization reuse (so every certificate needs both its challenges solved).
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
}
# Variables that could route a client elsewhere or change whom it trusts.
SCRUBBED_ENV = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
    "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "LEGO_CA_CERTIFICATES",
    "CERTSMITH_DIRECTORY", "CERTSMITH_CA_BUNDLE", "CERTSMITH_STATE_DIR",
)
PEBBLE_REQUEST = re.compile(r"^Pebble \S+ \S+ ([A-Z]+) (\S+) -> calling handler\(\)", re.MULTILINE)
ENDPOINTS = {
    "/dir": "directory",
    "/nonce-plz": "newNonce",
    "/sign-me-up": "newAccount",
    "/my-account/": "account",
    "/order-plz": "newOrder",
    "/authZ/": "authz",
    "/chalZ/": "challenge",
    "/finalize-order/": "finalize",
    "/my-order/": "order",
    "/certZ/": "certificate",
}


class BatchFailed(Exception):
    pass


# -- measuring processes --------------------------------------------------------------


@dataclass
class Measured:
    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_kb: int
    stderr_tail: str


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str],
    *,
    stdout: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> Measured:
    """Run ``cmd`` to completion; wall time and the peak RSS of it and its children."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(stdout if stdout else os.devnull, "wb"))
        err = stack.enter_context(tempfile.TemporaryFile())
        started = time.perf_counter()
        process = subprocess.Popen(list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
        lock = threading.Lock()
        reaped = False

        def kill() -> None:
            with lock:
                if not reaped:
                    process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
            with lock:
                reaped = True
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-8:]
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(process.returncode, seconds, cpu, int(usage.ru_maxrss), "\n".join(tail))


@dataclass
class Batch:
    """The state of one timed batch: where to work, what was spent."""

    pebble: PebbleServer
    workdir: Path
    certs: list[tuple[str, ...]]
    base_env: dict[str, str]
    certsmith_env: dict[str, str]
    peak_rss_kb: int = 0
    cpu_seconds: float = 0.0
    processes: int = 0

    @property
    def directory_url(self) -> str:
        return self.pebble.directory_url

    @property
    def ca_bundle(self) -> str:
        assert self.pebble.ca_bundle is not None
        return str(self.pebble.ca_bundle)

    @property
    def http_port(self) -> int:
        return self.pebble.http_port

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(extra)
        return env

    def exec(self, cmd: Sequence[str], env: dict[str, str], *, stdout: Path | None = None) -> Measured:
        result = run_measured(cmd, env, stdout=stdout, cwd=self.workdir)
        self.processes += 1
        self.cpu_seconds += result.cpu_seconds
        self.peak_rss_kb = max(self.peak_rss_kb, result.max_rss_kb)
        if result.returncode != 0:
            raise BatchFailed(f"{Path(cmd[0]).name} exited with status {result.returncode}:\n{result.stderr_tail}")
        return result


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    return env


def certsmith_env(pycache: Path | None) -> dict[str, str]:
    """The environment of certsmith's processes.

    A pip-installed certsmith has compiled bytecode, as Debian's certbot and acme-tiny
    have. An editable install under ``PYTHONDONTWRITEBYTECODE=1`` has none and would
    recompile every module on every start; with ``pycache`` the bytecode goes to that
    directory instead (``PYTHONPYCACHEPREFIX``), leaving the source tree untouched.
    """
    env = base_env()
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


# -- the clients ------------------------------------------------------------------------


class Scenario:
    """One way of issuing the batch with one client."""

    key = ""
    client = ""
    label = ""
    binary = ""
    install_hint = ""
    key_types = ""

    def executable(self) -> str | None:
        return shutil.which(self.binary)

    def missing(self) -> str | None:
        if self.executable() is None:
            return f"{self.binary} not found on PATH ({self.install_hint})"
        return None

    @contextlib.contextmanager
    def prepared(self, batch: Batch) -> Iterator[None]:
        """Untimed set-up around the batch (e.g. a web server the user already runs)."""
        yield

    def run(self, batch: Batch) -> list[Path]:
        """Issue every certificate of the batch; returns the certificate files (timed)."""
        raise NotImplementedError


def certsmith_executable() -> str | None:
    beside = Path(sys.executable).parent / "certsmith"
    return str(beside) if beside.exists() else shutil.which("certsmith")


class CertsmithCli(Scenario):
    key = "certsmith-cli"
    client = "certsmith"
    label = f"N{TIMES} CLI, sequential"
    binary = "certsmith"
    install_hint = "pip install -e . in this repository"
    key_types = "account ec256, certificate ec256"

    def executable(self) -> str | None:
        return certsmith_executable()

    def run(self, batch: Batch) -> list[Path]:
        exe = self.executable()
        assert exe is not None
        state = batch.workdir / "state"
        paths = []
        for names in batch.certs:
            batch.exec(
                [
                    exe, "--directory", batch.directory_url, "--ca-bundle", batch.ca_bundle, "--state-dir", str(state),
                    "issue", *(a for n in names for a in ("-d", n)), "--http-port", str(batch.http_port),
                    "--key-type", "ec256", "--email", EMAIL, "--agree-tos",
                ],
                batch.certsmith_env,
            )
            paths.append(state / "certificates" / names[0] / "fullchain.pem")
        return paths


class CertsmithMany(Scenario):
    key = "certsmith-many"
    client = "certsmith"
    label = "1 process, issue_many"
    binary = "certsmith"
    install_hint = "pip install -e . in this repository"
    key_types = "account ec256, certificate ec256"

    def executable(self) -> str | None:
        return sys.executable if certsmith_executable() else None

    def run(self, batch: Batch) -> list[Path]:
        state = batch.workdir / "state"
        cmd = [
            sys.executable, str(BENCH_DIR / "certsmith_many.py"), "--directory", batch.directory_url,
            "--ca-bundle", batch.ca_bundle, "--state-dir", str(state), "--http-port", str(batch.http_port),
            "--http-host", LOOPBACK, "--email", EMAIL, "--key-type", "ec256",
        ]
        for names in batch.certs:
            cmd += ["--cert", ",".join(names)]
        batch.exec(cmd, batch.certsmith_env, stdout=batch.workdir / "issue_many.json")
        return [state / "certificates" / names[0] / "fullchain.pem" for names in batch.certs]


class Certbot(Scenario):
    key = "certbot"
    client = "certbot"
    label = f"N{TIMES} CLI, sequential"
    binary = "certbot"
    install_hint = "apt-get install certbot"
    key_types = "account rsa2048 (fixed), certificate ecdsa secp256r1"

    def run(self, batch: Batch) -> list[Path]:
        exe = self.executable()
        assert exe is not None
        root = batch.workdir / "certbot"
        env = batch.env(REQUESTS_CA_BUNDLE=batch.ca_bundle)
        paths = []
        for names in batch.certs:
            batch.exec(
                [
                    exe, "certonly", "--standalone", "--non-interactive", "--agree-tos", "-m", EMAIL,
                    "--no-eff-email", "--server", batch.directory_url,
                    "--config-dir", str(root / "config"), "--work-dir", str(root / "work"),
                    "--logs-dir", str(root / "logs"),
                    "--http-01-port", str(batch.http_port), "--http-01-address", LOOPBACK,
                    "--key-type", "ecdsa", "--elliptic-curve", "secp256r1",
                    "--cert-name", names[0], *(a for n in names for a in ("-d", n)),
                ],
                env,
            )
            paths.append(root / "config" / "live" / names[0] / "fullchain.pem")
        return paths


class Lego(Scenario):
    key = "lego"
    client = "lego"
    label = f"N{TIMES} CLI, sequential"
    binary = "lego"
    install_hint = "apt-get install lego"
    key_types = "account ec256, certificate ec256 (--key-type ec256, lego's default)"

    def run(self, batch: Batch) -> list[Path]:
        exe = self.executable()
        assert exe is not None
        root = batch.workdir / "lego"
        env = batch.env(LEGO_CA_CERTIFICATES=batch.ca_bundle)
        paths = []
        for names in batch.certs:
            batch.exec(
                [
                    exe, "--server", batch.directory_url, "--email", EMAIL, "--accept-tos",
                    "--http", "--http.port", f"{LOOPBACK}:{batch.http_port}", "--path", str(root),
                    "--key-type", "ec256", *(a for n in names for a in ("-d", n)), "run",
                ],
                env,
            )
            paths.append(root / "certificates" / f"{names[0]}.crt")
        return paths


class AcmeTiny(Scenario):
    key = "acme-tiny"
    client = "acme-tiny"
    label = f"N{TIMES} CLI, sequential"
    binary = "acme-tiny"
    install_hint = "apt-get install acme-tiny"
    key_types = "account rsa2048 (acme-tiny supports RSA only), certificate ec256 (openssl)"

    @contextlib.contextmanager
    def prepared(self, batch: Batch) -> Iterator[None]:
        # acme-tiny writes token files straight into --acme-dir, which an existing web
        # server must publish as /.well-known/acme-challenge/: that server is not timed.
        webroot = batch.workdir / "www"
        (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
        log = (batch.workdir / "http-server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(batch.http_port), "--bind", LOOPBACK,
             "--directory", str(webroot)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(batch.http_port, server)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()

    def run(self, batch: Batch) -> list[Path]:
        exe = self.executable()
        assert exe is not None
        openssl = shutil.which("openssl") or "openssl"
        root = batch.workdir / "acme-tiny"
        root.mkdir()
        acme_dir = batch.workdir / "www" / ".well-known" / "acme-challenge"
        # Python's default SSL context (which acme-tiny's urlopen uses) honours SSL_CERT_FILE.
        env = batch.env(SSL_CERT_FILE=batch.ca_bundle)
        account_key = root / "account.key"
        batch.exec([openssl, "genrsa", "-out", str(account_key), "2048"], env)
        paths = []
        for names in batch.certs:
            key, csr, crt = (root / f"{names[0]}.{ext}" for ext in ("key", "csr", "crt"))
            batch.exec(
                [
                    openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-subj", f"/CN={names[0]}",
                    "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in names), "-out", str(csr),
                ],
                env,
            )
            # --disable-check: the self-check would resolve the name through the system
            # resolver (not Pebble's), i.e. leave 127.0.0.1; it sends nothing to the CA.
            batch.exec(
                [exe, "--account-key", str(account_key), "--csr", str(csr), "--acme-dir", str(acme_dir),
                 "--directory-url", batch.directory_url, "--disable-check", "--quiet"],
                env,
                stdout=crt,
            )
            paths.append(crt)
        return paths


SCENARIOS: list[Scenario] = [CertsmithCli(), CertsmithMany(), Certbot(), Lego(), AcmeTiny()]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BatchFailed(f"the helper web server exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise BatchFailed(f"the helper web server did not listen on port {port}")


# -- checking the results ---------------------------------------------------------------


def key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec256", "secp384r1": "ec384"}.get(key.curve.name, key.curve.name)
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    return type(key).__name__


def check_certificates(paths: Sequence[Path], certs: Sequence[tuple[str, ...]], issuer_prefix: str) -> list[str]:
    """Parse each certificate; returns the key types, raises if any is missing or wrong."""
    types = []
    for path, names in zip(paths, certs, strict=True):
        if not path.is_file():
            raise BatchFailed(f"no certificate at {path}")
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError as exc:
            raise BatchFailed(f"{path} is not a PEM certificate: {exc}") from None
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        got = set(san.get_values_for_type(x509.DNSName))
        if got != set(names):
            raise BatchFailed(f"{path} is for {sorted(got)}, expected {sorted(names)}")
        issuer = cert.issuer.rfc4514_string()
        if issuer_prefix not in issuer:
            raise BatchFailed(f"{path} was issued by {issuer}, not by this run's Pebble")
        types.append(key_type(cert))
    return types


def pebble_requests(log_text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for method, path in PEBBLE_REQUEST.findall(log_text):
        counts[f"{method} {ENDPOINTS.get(path, path)}"] += 1
    return counts


# -- running ----------------------------------------------------------------------------


@dataclass
class RunResult:
    scenario: str
    repetition: int
    ok: bool
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_kb: int = 0
    processes: int = 0
    requests: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    key_types: list[str] = field(default_factory=list)
    error: str | None = None


def pebble_issuer_cn(pebble: PebbleServer) -> str:
    intermediate = x509.load_pem_x509_certificate(pebble.management_get("/intermediates/0"))
    return intermediate.subject.rfc4514_string()


def run_once(
    scenario: Scenario, repetition: int, certs: list[tuple[str, ...]], root: Path, pycache: Path | None
) -> RunResult:
    workdir = root / f"{scenario.key}-{repetition}"
    (workdir / "client").mkdir(parents=True)
    pebble = PebbleServer(workdir=workdir / "pebble", env=PEBBLE_ENV, version="2.4")
    pebble.start()
    try:
        batch = Batch(
            pebble=pebble, workdir=workdir / "client", certs=certs, base_env=base_env(),
            certsmith_env=certsmith_env(pycache),
        )
        issuer = pebble_issuer_cn(pebble)
        with scenario.prepared(batch):
            started = time.perf_counter()
            try:
                paths = scenario.run(batch)
            finally:
                seconds = time.perf_counter() - started
        log_text = (workdir / "pebble" / "pebble.log").read_text(errors="replace")
        counts = pebble_requests(log_text)
        result = RunResult(
            scenario=scenario.key, repetition=repetition, ok=True, seconds=seconds,
            cpu_seconds=batch.cpu_seconds, peak_rss_kb=batch.peak_rss_kb, processes=batch.processes,
            requests=sum(counts.values()), breakdown=dict(sorted(counts.items())),
        )
        result.key_types = sorted(set(check_certificates(paths, certs, issuer)))
        return result
    except BatchFailed as exc:
        return RunResult(scenario=scenario.key, repetition=repetition, ok=False, error=str(exc))
    finally:
        pebble.stop()


def time_help(command: Sequence[str], runs: int, env: dict[str, str]) -> float:
    subprocess.run(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def tool_version(package: str, fallback: Sequence[str]) -> str:
    if shutil.which("dpkg-query"):
        found = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip() + " (Debian)"
    if fallback and shutil.which(fallback[0]):
        found = subprocess.run(list(fallback), capture_output=True, text=True, check=False)
        return (found.stdout or found.stderr).strip().splitlines()[0] if (found.stdout or found.stderr) else "?"
    return "?"


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            "certsmith": version("certsmith"),
            "pebble": tool_version("pebble", []),
            "certbot": tool_version("certbot", ["certbot", "--version"]),
            "lego": tool_version("lego", ["lego", "--version"]),
            "acme-tiny": tool_version("acme-tiny", []),
        },
    }


# -- reporting --------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    client: str
    label: str
    ok_runs: int
    runs: int
    seconds: float | None
    seconds_min: float | None
    seconds_max: float | None
    cpu_seconds: float | None
    requests_per_cert: float | None
    requests_range: str
    peak_rss_mb: float | None
    key_types: str
    breakdown_per_cert: dict[str, float]
    errors: list[str]


def summarize(scenario: Scenario, results: list[RunResult], n_certs: int) -> Summary:
    good = [r for r in results if r.ok]
    breakdown: dict[str, float] = {}
    if good:
        keys = sorted({k for r in good for k in r.breakdown})
        breakdown = {k: statistics.median(r.breakdown.get(k, 0) for r in good) / n_certs for k in keys}
    return Summary(
        scenario=scenario.key,
        client=scenario.client,
        label=scenario.label.replace("N", str(n_certs), 1),
        ok_runs=len(good),
        runs=len(results),
        seconds=statistics.median(r.seconds for r in good) if good else None,
        seconds_min=min(r.seconds for r in good) if good else None,
        seconds_max=max(r.seconds for r in good) if good else None,
        cpu_seconds=statistics.median(r.cpu_seconds for r in good) if good else None,
        requests_per_cert=statistics.median(r.requests for r in good) / n_certs if good else None,
        requests_range=f"{min(r.requests for r in good)}-{max(r.requests for r in good)}" if good else "-",
        peak_rss_mb=statistics.median(r.peak_rss_kb for r in good) / 1024 if good else None,
        key_types=scenario.key_types,
        breakdown_per_cert=breakdown,
        errors=[r.error for r in results if r.error],
    )


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "-"
    return f"{value / base:.1f}{TIMES}"


def table_rows(summaries: list[Summary]) -> tuple[list[str], list[list[str]]]:
    by_key = {s.scenario: s for s in summaries}
    cli = by_key.get("certsmith-cli")
    many = by_key.get("certsmith-many")
    header = ["client", "scenario", "seconds", "min-max", "÷ certsmith CLI", "÷ certsmith issue_many",
              "CPU s", "requests/cert", "peak RSS MB", "runs ok"]
    rows = []
    for s in summaries:
        rows.append([
            s.client, s.label,
            f"{s.seconds:.2f}" if s.seconds is not None else "FAILED",
            f"{s.seconds_min:.2f}-{s.seconds_max:.2f}" if s.seconds_min is not None and s.seconds_max else "-",
            ratio(s.seconds, cli.seconds if cli else None),
            ratio(s.seconds, many.seconds if many else None),
            f"{s.cpu_seconds:.2f}" if s.cpu_seconds is not None else "-",
            f"{s.requests_per_cert:.1f}" if s.requests_per_cert is not None else "-",
            f"{s.peak_rss_mb:.0f}" if s.peak_rss_mb is not None else "-",
            f"{s.ok_runs}/{s.runs}",
        ])
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_lines(summaries: list[Summary]) -> list[str]:
    by_key = {s.scenario: s for s in summaries}
    lines = []
    for base_key, base_name in (("certsmith-cli", "certsmith CLI"), ("certsmith-many", "certsmith issue_many")):
        base = by_key.get(base_key)
        if base is None or base.seconds is None:
            continue
        others = [s for s in summaries if s.client != "certsmith" and s.seconds is not None]
        if not others:
            continue
        lines.append(f"time vs {base_name}: " + ", ".join(
            f"{s.client}/certsmith = {s.seconds / base.seconds:.1f}{TIMES}" for s in others if s.seconds))
        if base.requests_per_cert:
            lines.append(f"requests/cert vs {base_name}: " + ", ".join(
                f"{s.client}/certsmith = {s.requests_per_cert / base.requests_per_cert:.2f}{TIMES}"
                for s in others if s.requests_per_cert))
        if base.peak_rss_mb:
            lines.append(f"peak RSS vs {base_name}: " + ", ".join(
                f"{s.client}/certsmith = {s.peak_rss_mb / base.peak_rss_mb:.2f}{TIMES}"
                for s in others if s.peak_rss_mb))
    return lines


def targets(summaries: list[Summary], help_times: dict[str, float], n_certs: int = 10) -> list[str]:
    by_key = {s.scenario: s for s in summaries}
    others = [s for s in summaries if s.client != "certsmith" and s.seconds is not None]
    lines = []
    goals = (("lego", 5.0, "a fifth of lego's time"), ("certbot", 10.0, "a tenth of certbot's time"),
             ("acme-tiny", 1.0, "faster than acme-tiny"))
    for base_key in ("certsmith-cli", "certsmith-many"):
        mine = by_key.get(base_key)
        if mine is None or mine.seconds is None:
            continue
        for other_key, factor, text in goals:
            other = by_key.get(other_key)
            if other is None or other.seconds is None:
                continue
            got = other.seconds / mine.seconds
            verdict = "met" if got > factor else "MISSED"
            lines.append(f"{mine.label} ({base_key}): {text}: {other_key}/certsmith = {got:.1f}{TIMES} "
                         f"(need > {factor:g}{TIMES}) — {verdict}")
        if mine.requests_per_cert is not None and others:
            fewest = min(others, key=lambda s: s.requests_per_cert or float("inf"))
            if fewest.requests_per_cert is not None:
                verdict = "met" if mine.requests_per_cert < fewest.requests_per_cert else "MISSED"
                lines.append(f"{mine.label} ({base_key}): fewer requests/cert than any other: "
                             f"{mine.requests_per_cert:.1f} vs {fewest.requests_per_cert:.1f} ({fewest.client}); "
                             f"requests per batch {mine.requests_range} vs {fewest.requests_range} — {verdict}")
    cli, tiny = by_key.get("certsmith-cli"), by_key.get("acme-tiny")
    if cli is not None and cli.seconds is not None:
        # The CLI's own targets (the issue "a CLI as fast as its library"); one process per certificate.
        if tiny is not None and tiny.seconds is not None:
            share = cli.seconds / tiny.seconds
            lines.append(f"{cli.label}: certsmith/acme-tiny time = {share:.2f} (target <= 0.8) — "
                         f"{'met' if share <= 0.8 else 'MISSED'}")
        if cli.cpu_seconds is not None:
            per_process = cli.cpu_seconds / n_certs
            lines.append(f"CPU per certsmith issue process: {per_process:.3f} s (target <= 0.4; the first one "
                         f"also registers) — {'met' if per_process <= 0.4 else 'MISSED'}")
        if cli.peak_rss_mb is not None:
            mib = cli.peak_rss_mb  # ru_maxrss KiB / 1024
            lines.append(f"peak RSS of one certsmith issue: {mib:.0f} MiB (target <= 40) — "
                         f"{'met' if mib <= 40 else 'MISSED'}")
    if "certsmith" in help_times:
        value = help_times["certsmith"]
        lines.append(f"certsmith --help: {value * 1000:.0f} ms (need well under 500 ms) — "
                     f"{'met' if value < 0.25 else 'MISSED' if value >= 0.5 else 'under 500 ms, not well under'}")
    return lines


def breakdown_markdown(summaries: list[Summary]) -> str:
    keys = sorted({k for s in summaries for k in s.breakdown_per_cert}, key=_endpoint_order)
    header = ["request", *(f"{s.client} ({s.scenario})" if s.client == "certsmith" else s.client
                           for s in summaries)]
    rows = [[k, *(f"{s.breakdown_per_cert.get(k, 0):.1f}" for s in summaries)] for k in keys]
    rows.append(["**total**", *(f"{s.requests_per_cert:.1f}" if s.requests_per_cert is not None else "-"
                                for s in summaries)])
    return markdown_table(header, rows)


def _endpoint_order(key: str) -> tuple[int, str]:
    names = list(ENDPOINTS.values())
    endpoint = key.split(" ", 1)[1]
    return (names.index(endpoint) if endpoint in names else len(names), key)


def write_reports(out_dir: Path, data: dict[str, Any], summaries: list[Summary], text: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"bench-{stamp}.json"
    md_path = out_dir / f"bench-{stamp}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    header, rows = table_rows(summaries)
    env = data["environment"]
    settings = data["settings"]
    md = [
        f"# certsmith benchmark — {env['date']}",
        "",
        f"{settings['certs']} certificates {TIMES} 2 names, http-01, median of K={settings['repetitions']}; "
        f"fresh Pebble {env['versions']['pebble']} per run with {' '.join(f'{k}={v}' for k, v in PEBBLE_ENV.items())}.",
        f"Machine: {env['cpu']}, {env['cpus']} CPUs, {env['platform']}, Python {env['python']}.",
        "Seconds: wall time of the whole batch including account registration and every process start; "
        "CPU: user+system time of all the batch's processes; requests: every HTTP request Pebble served; "
        "RSS: the largest client process of the batch."
        + (" certsmith ran with a private bytecode cache (this environment sets PYTHONDONTWRITEBYTECODE)."
           if settings.get("certsmith_bytecode_cache") else ""),
        "",
        markdown_table(header, rows),
        "",
        *(f"- {line}" for line in data["ratios"]),
        "",
        "## Targets",
        "",
        *(f"- {line}" for line in data["targets"]),
        "",
        "## `--help` start-up (median of " + str(settings["help_runs"]) + ")",
        "",
        markdown_table(["command", "ms", "÷ certsmith"],
                       [[f"{k} --help", f"{v * 1000:.0f}", ratio(v, data["help"].get("certsmith"))]
                        for k, v in data["help"].items()]),
        "",
        "## ACME requests per certificate, by endpoint (counted from Pebble's log)",
        "",
        breakdown_markdown(summaries),
        "",
        "## Clients",
        "",
        *(f"- **{s.client}** ({s.label}): {env['versions'].get(s.client, '')}; keys: {s.key_types}"
          for s in summaries),
        *(f"- skipped: {note}" for note in data["skipped"]),
        *(f"- {s.scenario} failures: " + "; ".join(e.splitlines()[0] for e in s.errors)
          for s in summaries if s.errors),
        "",
    ]
    md_path.write_text("\n".join(md))
    (out_dir / "latest.md").write_text("\n".join(md))
    (out_dir / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", "--repetitions", type=int, default=3, help="batches per client (median reported)")
    parser.add_argument("--certs", type=int, default=10, help="certificates per batch")
    parser.add_argument("--clients", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated scenarios (default: all)")
    parser.add_argument("--help-runs", type=int, default=20, help="--help start-up samples per client (0: skip)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where JSON and Markdown go")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (Pebble logs, state)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed one-certificate run of each client before the timed ones")
    parser.add_argument("--no-pycache", dest="pycache", action="store_false",
                        help="run certsmith exactly with this environment's bytecode settings "
                             "(by default a private bytecode cache is used when PYTHONDONTWRITEBYTECODE is set)")
    args = parser.parse_args(argv)

    wanted = [k.strip() for k in args.clients.split(",") if k.strip()]
    unknown = set(wanted) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown client(s): {', '.join(sorted(unknown))}; choose from "
                     + ", ".join(s.key for s in SCENARIOS))
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; install the Debian package "
                  f"{'openssl' if tool == 'openssl' else 'pebble'}", file=sys.stderr)
            return 2
    scenarios: list[Scenario] = []
    skipped: list[str] = []
    for scenario in SCENARIOS:
        if scenario.key not in wanted:
            continue
        why = scenario.missing()
        if why:
            skipped.append(f"{scenario.key}: {why}")
            print(f"bench: skipping {scenario.key}: {why}", file=sys.stderr)
        else:
            scenarios.append(scenario)
    certs = [(f"site{i}.{DOMAIN}", f"www.site{i}.{DOMAIN}") for i in range(1, args.certs + 1)]

    workroot = Path(tempfile.mkdtemp(prefix="certsmith-bench-"))
    pycache = workroot / "pycache" if args.pycache and os.environ.get("PYTHONDONTWRITEBYTECODE") else None
    results: dict[str, list[RunResult]] = {s.key: [] for s in scenarios}
    warmup_failures: list[str] = []
    try:
        if args.warmup:
            for scenario in scenarios:  # fills page cache and bytecode cache; not counted
                print(f"bench: {scenario.key} warm-up (1 certificate, untimed) ...", file=sys.stderr, flush=True)
                result = run_once(scenario, 0, certs[:1], workroot, pycache)
                if not result.ok:
                    warmup_failures.append(f"{scenario.key}: {result.error}")
                    print(f"bench:   warm-up FAILED: {result.error}", file=sys.stderr)
        for repetition in range(1, args.repetitions + 1):
            for scenario in scenarios:  # interleaved, so drift hits every client alike
                print(f"bench: {scenario.key} run {repetition}/{args.repetitions} ...", file=sys.stderr, flush=True)
                result = run_once(scenario, repetition, certs, workroot, pycache)
                results[scenario.key].append(result)
                if result.ok:
                    print(f"bench:   {result.seconds:.2f}s, CPU {result.cpu_seconds:.2f}s, {result.requests} requests, "
                          f"peak RSS {result.peak_rss_kb / 1024:.0f} MB", file=sys.stderr)
                else:
                    print(f"bench:   FAILED: {result.error}", file=sys.stderr)

        help_commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        exe = certsmith_executable()
        chosen = {s.client for s in scenarios}
        if exe and "certsmith" in chosen:
            help_commands["certsmith"] = ([exe, "--help"], certsmith_env(pycache))
        for name in ("certbot", "lego", "acme-tiny"):
            found = shutil.which(name)
            if found and name in chosen:
                help_commands[name] = ([found, "--help"], base_env())
        help_times: dict[str, float] = {}
        if args.help_runs > 0:
            for name, (command, env) in help_commands.items():
                print(f"bench: {name} --help x{args.help_runs} ...", file=sys.stderr, flush=True)
                help_times[name] = time_help(command, args.help_runs, env)
    finally:
        if args.keep:
            print(f"bench: work directories kept in {workroot}", file=sys.stderr)
        else:
            shutil.rmtree(workroot, ignore_errors=True)

    summaries = [summarize(s, results[s.key], args.certs) for s in scenarios]
    header, rows = table_rows(summaries)
    data: dict[str, Any] = {
        "environment": environment(),
        "settings": {"certs": args.certs, "names_per_cert": 2, "challenge": "http-01",
                     "repetitions": args.repetitions, "help_runs": args.help_runs, "pebble_env": PEBBLE_ENV,
                     "warmup": args.warmup, "certsmith_bytecode_cache": pycache is not None},
        "warmup_failures": warmup_failures,
        "summaries": [asdict(s) for s in summaries],
        "runs": [asdict(r) for rs in results.values() for r in rs],
        "help": help_times,
        "ratios": ratio_lines(summaries),
        "targets": targets(summaries, help_times, args.certs),
        "skipped": skipped,
    }
    text = text_table(header, rows)
    print()
    print(text)
    print()
    for line in data["ratios"]:
        print(line)
    if help_times:
        print(f"--help (median of {args.help_runs}): "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in help_times.items()))
    print()
    for line in data["targets"]:
        print(line)
    for note in skipped:
        print("skipped:", note)
    json_path, md_path = write_reports(args.out, data, summaries, text)
    print(f"\nwrote {json_path} and {md_path}")
    return 0 if all(s.ok_runs == s.runs for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
