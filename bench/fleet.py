#!/usr/bin/env python3
"""Fleet renewal on one Redis and one Pebble: N due lineages renewed by one process, then by W workers.

    PYTHONPATH=src python bench/fleet.py --lineages 1000 --workers 4

For each run: a fresh key prefix in one redis-server (started here, no persistence), N
lineages stored as due (a self-signed certificate a day from expiry, http-01 into a web
root that ``python -m http.server`` serves on Pebble's validation port), one account, then
``certsmith renew`` -- once in one process, once in W processes started together. Reported:
wall time, requests Pebble handled per certificate, Redis commands per certificate (the
``INFO commandstats`` delta), orders created (must be N). Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from certsmith._time import format_time
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.storage import open_store
from certsmith.storage.base import CertificateFiles, LineageMeta
from certsmith.testing.pebble import _HANDLER_CALL, PebbleServer, free_port

CERTSMITH = [sys.executable, "-m", "certsmith.cli"]


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))


def add_due(store_url: str, env: dict[str, str], pebble: PebbleServer, count: int, webroot: Path) -> None:
    store = open_store(store_url, env=env)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    settings = CertificateRequest(names=("x",), challenge=ChallengeSettings(webroot=str(webroot))).settings_json()
    for i in range(count):
        name = f"site{i:04d}.fleet.bench.test"
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=60)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(Encoding.PEM)
        meta = LineageMeta(
            name=name, names=(name,), key_type="ec256", directory_url=pebble.directory_url, settings=settings,
            not_before=format_time(now - datetime.timedelta(days=60)),
            not_after=format_time(now + datetime.timedelta(days=1)), serial=format(cert.serial_number, "x"),
            issuer=name, version=0, created_at="", updated_at="",
        )
        store.save_certificate(meta, CertificateFiles(pem, b"", pem, key_pem))


def run(label: str, workers: int, args: argparse.Namespace, pebble: PebbleServer, redis_url: str,
        webroot: Path, work: Path) -> dict[str, Any]:
    store_url = f"{redis_url}?prefix=bench-{label}"
    env = {**os.environ, "CERTSMITH_STORE": store_url,
           "CERTSMITH_STORE_KEY": base64.b64encode(os.urandom(32)).decode()}
    base = [*CERTSMITH, "--directory", pebble.directory_url, "--ca-bundle", str(pebble.ca_bundle),
            "--state-dir", str(work / label)]
    subprocess.run([*base, "account", "register", "--email", "bench@example.com", "--agree-tos"], env=env,
                   check=True, capture_output=True)
    add_due(store_url, env, pebble, args.lineages, webroot)
    client = redis.Redis.from_url(redis_url)
    mark, calls = pebble.log_mark(), commands(client)
    started = time.monotonic()
    procs = [subprocess.Popen([*base, "-q", "--json", "renew", "--concurrency", str(args.concurrency)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    outs = [p.communicate(timeout=3600) for p in procs]
    wall = time.monotonic() - started
    calls = commands(client) - calls
    renewed = [sum(1 for r in json.loads(out)["results"] if r["renewed"]) if out.strip() else 0 for out, _ in outs]
    requests = len(re.findall(_HANDLER_CALL, pebble.log_text(mark), re.MULTILINE))
    orders = len(pebble.orders_created(mark))
    return {"run": label, "workers": workers, "lineages": args.lineages, "wall_s": round(wall, 1),
            "renewed_per_worker": renewed, "orders": orders,
            "requests_per_cert": round(requests / args.lineages, 2),
            "redis_commands_per_cert": round(calls / args.lineages, 1),
            "exit": [p.returncode for p in procs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lineages", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32, help="renew --concurrency for every run")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certsmith-fleet-bench-"))
    webroot = work / "www"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    redis_port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, cwd=work)
    pebble = PebbleServer(workdir=work / "pebble",
                          env={"PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"})
    web = None
    try:
        pebble.start()
        web = subprocess.Popen([sys.executable, "-m", "http.server", str(pebble.http_port), "--bind", "127.0.0.1",
                                "--directory", str(webroot)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        results = [run("single", 1, args, pebble, redis_url, webroot, work),
                   run(f"fleet{args.workers}", args.workers, args, pebble, redis_url, webroot, work)]
        print(json.dumps(results, indent=2))
        ok = all(r["orders"] == args.lineages and not any(r["exit"]) for r in results)
        return 0 if ok else 1
    finally:
        if web is not None:
            web.terminate()
            web.wait()
        pebble.stop()
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
