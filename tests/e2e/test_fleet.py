"""A fleet on one Redis: four renew workers splitting 40 due lineages, a SIGKILLed lease holder, sync on three hosts.

The due lineages are written straight into the store (a self-signed certificate a day from
expiry, renewed over http-01 into a shared web root that a small HTTP server in the test
serves on the port Pebble validates), so the test pays only for the renewals it checks.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from certsmith._time import format_time
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.storage import open_store
from certsmith.storage.base import CertificateFiles, LineageMeta, Store
from certsmith.testing.pebble import PebbleServer
from tests.conftest import CERTSMITH, Cli, clean_env


class WebRoot:
    """``python -m http.server`` for a web root, in-process, with a gate that can hold every answer."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not web.open.is_set():
                    web.held.set()
                    web.open.wait(30)
                path = web.root / self.path.lstrip("/")
                body = path.read_bytes() if path.is_file() and web.root in path.resolve().parents else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebRoot:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webroot(pebble: PebbleServer, tmp_path: Path) -> Iterator[WebRoot]:
    root = tmp_path / "www"
    (root / ".well-known" / "acme-challenge").mkdir(parents=True)
    with WebRoot(root, pebble.http_port) as web:
        yield web


def store_env(redis_url: str) -> dict[str, str]:
    return clean_env(CERTSMITH_STORE=redis_url, CERTSMITH_STORE_KEY=base64.b64encode(b"k" * 32).decode())


def add_due_lineages(env: dict[str, str], pebble: PebbleServer, names: list[str], webroot: Path,
                     deploy: tuple[str, ...] = ()) -> None:
    """Store ``names`` as lineages of Pebble whose certificate (self-signed) expires in a day: due now."""
    from certsmith.deploy.base import parse_deploy_spec

    store = open_store(env["CERTSMITH_STORE"], env=env)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    for name in names:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=60)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(Encoding.PEM)
        request = CertificateRequest(
            names=(name,), lineage=name, challenge=ChallengeSettings(challenge="http-01", webroot=str(webroot)),
            deploy=tuple(parse_deploy_spec(text) for text in deploy),
        )
        meta = LineageMeta(
            name=name, names=(name,), key_type="ec256", directory_url=pebble.directory_url,
            settings=request.settings_json(), not_before=format_time(now - datetime.timedelta(days=60)),
            not_after=format_time(now + datetime.timedelta(days=1)), serial=format(cert.serial_number, "x"),
            issuer=name, version=0, created_at="", updated_at="",
        )
        store.save_certificate(meta, CertificateFiles(pem, b"", pem, key_pem))


def test_four_workers_renew_forty_lineages_once_each(cli: Cli, redis_url: str, webroot: WebRoot) -> None:
    env = store_env(redis_url)
    cli.run("account", "register", "--email", "fleet@example.com", "--agree-tos", env=env)
    names = [f"w{i:02d}.fleet.example.com" for i in range(40)]
    add_due_lineages(env, cli.pebble, names, webroot.root)
    mark = cli.pebble.log_mark()
    workers = [
        subprocess.Popen([*CERTSMITH, *cli.global_args(), "--json", "renew", "--concurrency", "2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for _ in range(4)
    ]
    answers = [worker.communicate(timeout=240) for worker in workers]
    for worker, (_out, err) in zip(workers, answers, strict=True):
        assert worker.returncode == 0, err
        assert "Traceback" not in err
    results = [json.loads(out)["results"] for out, _ in answers]
    renewed = [sorted(r["name"] for r in result if r["renewed"]) for result in results]
    assert sorted(name for mine in renewed for name in mine) == names  # every lineage exactly once
    assert all(mine for mine in renewed), [len(mine) for mine in renewed]  # no worker sat idle
    for result in results:  # every worker saw every lineage: renewed it, or left it to its holder / kept it
        assert sorted(r["name"] for r in result) == names
        assert not [r for r in result if r.get("error")]
    assert len(cli.pebble.orders_created(mark)) == 40
    store = open_store(redis_url, env=env)
    assert {version_of(store, name) for name in names} == {2}


def test_a_sigkilled_lease_holder_is_taken_over_after_its_lease(
    cli: Cli, redis_url: str, webroot: WebRoot
) -> None:
    env = store_env(f"{redis_url}?lease=2")
    cli.run("account", "register", "--email", "fleet@example.com", "--agree-tos", env=env)
    add_due_lineages(env, cli.pebble, ["killed.fleet.example.com"], webroot.root)
    mark = cli.pebble.log_mark()
    webroot.open.clear()  # Pebble's validation request waits: the worker holds the lease meanwhile
    holder = subprocess.Popen([*CERTSMITH, *cli.global_args(), "renew"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert webroot.held.wait(60), "the first worker never reached validation"
        assert redis.Redis.from_url(redis_url).exists("certsmith:lock:killed.fleet.example.com")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        webroot.open.set()
    started = time.monotonic()
    taken = json.loads(cli.run("--json", "renew", "--wait", "30", env=env).stdout)["results"]
    assert [(r["name"], r["renewed"]) for r in taken] == [("killed.fleet.example.com", True)]
    assert time.monotonic() - started < 30
    assert len(cli.pebble.certificates_issued(mark)) == 1  # the killed worker never finalized
    store = open_store(redis_url, env=env)
    assert version_of(store, "killed.fleet.example.com") == 2


def version_of(store: Store, name: str) -> int:
    meta = store.load_meta(name)
    assert meta is not None
    return meta.version


def served_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_sync_on_three_hosts_after_one_renew(cli: Cli, redis_url: str, webroot: WebRoot, tmp_path: Path) -> None:
    env = store_env(redis_url)
    cli.run("account", "register", "--email", "fleet@example.com", "--agree-tos", env=env)
    add_due_lineages(env, cli.pebble, ["site.fleet.example.com"], webroot.root)
    renewed = json.loads(cli.run("--json", "renew", env=env).stdout)["results"]
    assert renewed[0]["renewed"] is True
    store = open_store(redis_url, env=env)
    meta = store.load_meta("site.fleet.example.com")
    assert meta is not None and meta.version == 2
    hosts = [tmp_path / f"host{i}" for i in range(3)]

    def sync(host: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        served = host / "served"
        deploy = f"files:fullchain={served}/fullchain.pem,key={served}/key.pem"
        return cli.run("--json", "sync", "--deploy", deploy, "--local-state", str(host / "state"), env=env,
                       check=check)

    # A target that fails is not noted as delivered: the next sync tries again.
    failed = sync(hosts[0], check=False)
    assert failed.returncode == 1 and "does not exist" in failed.stderr and "Traceback" not in failed.stderr
    assert not (hosts[0] / "state" / "delivered.json").exists()
    for host in hosts:
        (host / "served").mkdir(parents=True)
    first = [json.loads(sync(host).stdout)["results"] for host in hosts]
    for host, result in zip(hosts, first, strict=True):
        assert [(r["name"], r["delivered"], r["version"]) for r in result] == [("site.fleet.example.com", True, 2)]
        assert served_serial(host / "served" / "fullchain.pem") == int(meta.serial, 16)
        assert (host / "state" / "delivered.json").is_file()
    before = {host: {p: p.stat().st_mtime_ns for p in (host / "served").iterdir()} for host in hosts}
    again = [json.loads(sync(host).stdout)["results"] for host in hosts]
    for host, result in zip(hosts, again, strict=True):
        assert [(r["delivered"], r["reason"]) for r in result] == [(False, "version 2 already delivered here")]
        assert {p: p.stat().st_mtime_ns for p in (host / "served").iterdir()} == before[host]
