"""The CLI-speed targets that bench/run.py's batches do not cover, measured in one run.

* start-up: ``python -c pass`` vs ``certsmith --help`` vs ``certsmith list`` (10 lineages);
  targets: ``--help`` <= 6x ``python -c pass``, ``list`` <= 1.5x ``--help``;
* one process issuing 100 certificates (``bench/certsmith_many.py``, account registration
  included) on a fresh Pebble 2.4: CPU seconds per certificate, target <= 0.08 s;
* ``certsmith renew`` over 10,000 lineages that are not due (written straight into the
  store's layout with one self-signed certificate reused; their ARI answers are recent,
  so no request reaches a CA): wall time, target < 10 s.

The per-process ``issue`` targets (CPU <= 0.4 s, peak RSS <= 40 MiB, 10 issues <= 0.8x
acme-tiny's 10) come from bench/run.py's certsmith-cli and acme-tiny batches.

    /work/main/.venv/bin/python bench/targets.py [--runs 20] [--certs 100] [--lineages 10000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    BENCH_DIR,
    EMAIL,
    PEBBLE_ENV,
    certsmith_env,
    certsmith_executable,
    run_measured,
)

from certsmith.testing.pebble import LOOPBACK, PebbleServer


def sample(cmd: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``runs`` runs (after one untimed run)."""
    run_measured(cmd, env)
    walls, cpus = [], []
    for _ in range(runs):
        result = run_measured(cmd, env)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr_tail}")
        walls.append(result.seconds)
        cpus.append(result.cpu_seconds)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_lineages(root: Path, count: int, directory_url: str) -> None:
    """``count`` current lineages in FileStore's layout (see storage/files.py), none of them due."""
    cert_pem, key_pem = self_signed()
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    files = {"cert.pem": cert_pem, "chain.pem": cert_pem, "fullchain.pem": cert_pem * 2, "privkey.pem": key_pem}
    for i in range(count):
        name = f"site{i}.bench.test"
        meta: dict[str, Any] = {
            "name": name, "names": [name, "www." + name], "key_type": "ec256", "directory_url": directory_url,
            "settings": {"challenge": {"challenge": "http-01", "http_port": 80}},
            "not_before": stamp,
            "not_after": (now + datetime.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "serial": f"{i + 1:x}", "issuer": "bench.test", "version": 1,
            "created_at": stamp, "updated_at": stamp, "cert_id": f"aWQ.{i:x}",
        }
        lineage = root / "certificates" / name
        version = lineage / "archive" / "1"
        version.mkdir(parents=True)
        for file_name, data in files.items():
            (version / file_name).write_bytes(data)
        (version / "meta.json").write_text(json.dumps(meta))
        (lineage / "current").symlink_to("archive/1")
        for file_name in (*files, "meta.json"):
            (lineage / file_name).symlink_to(f"current/{file_name}")
        state = {"version": 1, "ari_next_check": later, "ari_checked_at": stamp}
        (lineage / "renewal.json").write_text(json.dumps(state))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="start-up samples per command")
    parser.add_argument("--certs", type=int, default=100, help="certificates issued by one process (0: skip)")
    parser.add_argument("--lineages", type=int, default=10000, help="lineages for the renew scan (0: skip)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "targets.json")
    args = parser.parse_args(argv)
    exe = certsmith_executable()
    if exe is None:
        raise SystemExit("the certsmith console script is not installed beside this Python or on PATH")
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="certsmith-targets-") as tmp:
        work = Path(tmp)
        env = certsmith_env(work / "pycache" if os.environ.get("PYTHONDONTWRITEBYTECODE") else None)

        if args.runs:
            small = work / "small-state"
            write_lineages(small, 10, "https://127.0.0.1:1/dir")
            base = sample([sys.executable, "-c", "pass"], env, args.runs)
            helped = sample([exe, "--help"], env, args.runs)
            listed = sample([exe, "--state-dir", str(small), "list"], env, args.runs)
            report["startup"] = {"python -c pass": base, "certsmith --help": helped, "certsmith list": listed}
            help_ratio = helped["wall"] / base["wall"]
            list_ratio = listed["wall"] / helped["wall"]
            lines += [
                f"python -c pass {base['wall'] * 1000:.0f} ms, certsmith --help {helped['wall'] * 1000:.0f} ms, "
                f"certsmith list (10 lineages) {listed['wall'] * 1000:.0f} ms (medians of {args.runs})",
                f"--help / python -c pass = {help_ratio:.2f} (target <= 6) — {'met' if help_ratio <= 6 else 'MISSED'}",
                f"list / --help = {list_ratio:.2f} (target <= 1.5) — {'met' if list_ratio <= 1.5 else 'MISSED'}",
            ]

        if args.certs:
            with PebbleServer(workdir=work / "pebble", env=PEBBLE_ENV, version="2.4") as pebble:
                def many(state: str, certs: int) -> list[str]:
                    cmd = [
                        sys.executable, str(BENCH_DIR / "certsmith_many.py"), "--directory", pebble.directory_url,
                        "--ca-bundle", str(pebble.ca_bundle), "--state-dir", str(work / state),
                        "--http-port", str(pebble.http_port), "--http-host", LOOPBACK, "--email", EMAIL,
                        "--key-type", "ec256",
                    ]
                    for i in range(certs):
                        cmd += ["--cert", f"{state}{i}.bench.test,www.{state}{i}.bench.test"]
                    return cmd

                # Untimed, as run.py's warm-up: fills the private bytecode cache (with
                # PYTHONPYCACHEPREFIX every module, httpx and cryptography included, is
                # compiled on first use: about 1 s of CPU that is not the per-certificate cost).
                run_measured(many("warmup", 1), env)
                result = run_measured(many("many", args.certs), env, stdout=work / "many.json")
            results = json.loads((work / "many.json").read_text()) if result.returncode == 0 else []
            ok = sum(1 for r in results if r.get("ok"))
            per_cert = result.cpu_seconds / args.certs
            report["many"] = {"certs": args.certs, "ok": ok, "wall": result.seconds, "cpu": result.cpu_seconds,
                              "cpu_per_cert": per_cert, "peak_rss_kb": result.max_rss_kb}
            lines.append(
                f"{args.certs} certificates in one process: {ok} ok, {result.seconds:.2f} s wall, "
                f"{result.cpu_seconds:.2f} s CPU = {per_cert:.3f} s/cert (target <= 0.08) — "
                f"{'met' if per_cert <= 0.08 and ok == args.certs else 'MISSED'}"
            )

        if args.lineages:
            state = work / "big-state"
            started = time.perf_counter()
            write_lineages(state, args.lineages, "https://127.0.0.1:1/dir")  # port 1: any request would fail
            written = time.perf_counter() - started
            result = run_measured([exe, "--state-dir", str(state), "--json", "renew"], env, stdout=work / "renew.json")
            outcome = json.loads((work / "renew.json").read_text()) if result.returncode == 0 else {}
            kept = sum(1 for r in outcome.get("results", []) if not r["renewed"] and not r.get("error"))
            report["renew_scan"] = {"lineages": args.lineages, "kept": kept, "wall": result.seconds,
                                    "cpu": result.cpu_seconds, "peak_rss_kb": result.max_rss_kb,
                                    "returncode": result.returncode}
            lines.append(
                f"renew over {args.lineages} lineages (none due, written in {written:.1f} s): "
                f"{result.seconds:.2f} s wall, {result.cpu_seconds:.2f} s CPU, {kept} kept, exit {result.returncode}"
                f" (target < 10 s) — {'met' if result.seconds < 10 and kept == args.lineages else 'MISSED'}"
            )
            if result.returncode != 0:
                lines.append(result.stderr_tail)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
