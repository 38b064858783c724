"""``make demo``: issue a real certificate from a local Pebble and show the result.

Starts Pebble 2.10 (built by ``scripts/bootstrap.sh``; Debian's 2.4 when it is missing)
with pebble-challtestsrv as its DNS on free loopback ports, runs the
``certsmith`` command exactly as a user would (register, then issue two names over
the built-in http-01 server), prints where the files are and what the certificate
says, and stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from certsmith.testing.pebble import PebbleNotFound, PebbleServer, PebbleVersion, find_pebble

DEMO_NAMES = ("demo.certsmith.test", "www.demo.certsmith.test")


def available_pebble() -> PebbleVersion:
    """Pebble 2.10 when it is installed, else Debian's 2.4 (saying so); exits when neither is."""
    try:
        return find_pebble("2.10").version
    except PebbleNotFound as modern:
        try:
            fallback = find_pebble("2.4").version
        except PebbleNotFound as debian:
            raise SystemExit(f"demo: no Pebble to run.\n  {modern}\n  {debian}") from None
        print(f"demo: {modern}\n  Using Debian's Pebble 2.4 instead.", file=sys.stderr)
        return fallback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default="demo-state", help="where certsmith stores the demo's files")
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir).resolve()

    version = available_pebble()
    print(f"Starting Pebble {version} and pebble-challtestsrv on 127.0.0.1 ...", file=sys.stderr)
    with PebbleServer(version=version) as pebble:
        base = [
            sys.executable, "-m", "certsmith",
            "--directory", pebble.directory_url,
            "--ca-bundle", str(pebble.ca_bundle),
            "--state-dir", str(state_dir),
        ]

        def run(*command: str) -> str:
            shown = ["certsmith", *base[3:], *command]
            print("$ " + shlex.join(shown), file=sys.stderr)
            result = subprocess.run([*base, *command], stdout=subprocess.PIPE, text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"demo: certsmith {command[0]} failed with status {result.returncode}")
            return result.stdout

        started = time.monotonic()
        names = [arg for name in DEMO_NAMES for arg in ("-d", name)]
        issued = json.loads(
            run(
                "--json", "issue", *names,
                "--http-port", str(pebble.http_port),
                "--email", "demo@certsmith.test", "--agree-tos",
            )
        )
        elapsed = time.monotonic() - started
        root = state_dir / "pebble-root.pem"
        root.write_bytes(pebble.management_get("/roots/0"))
        lineage = Path(issued["directory"])
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(lineage / "chain.pem"),
             str(lineage / "cert.pem")],
            capture_output=True, text=True, check=False,
        )

    print()
    print(f"Issued by the local Pebble in {elapsed:.1f}s (including account registration).")
    print(f"  names:     {', '.join(issued['names'])}")
    print(f"  issuer:    {issued['issuer']}")
    print(f"  expires:   {issued['not_after']}")
    print(f"  serial:    {issued['serial']}")
    print(f"  files:     {lineage}/{{fullchain,privkey,cert,chain}}.pem")
    print(f"  verified:  {'yes' if verify.returncode == 0 else 'NO: ' + verify.stderr.strip()} "
          f"(openssl verify against Pebble's root, saved as {root})")
    print(f"Inspect it with: certsmith --state-dir {state_dir} show {issued['name']}")
    return 0 if verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
