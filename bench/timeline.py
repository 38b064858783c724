"""Where one certsmith run spends its time: a millisecond timeline against a local Pebble.

Starts Pebble with the benchmark's settings, registers an account (untimed), then runs
``certsmith issue`` for one certificate (or, with ``--many N``, ``bench/certsmith_many.py``
for N certificates) with every log record stamped with the milliseconds since the
process was spawned. Prints the timeline, the phases (start-up and imports, ACME
exchange, exit) and the largest gaps between consecutive events, which is where
the process slept or computed.

    /work/venv/bin/python bench/timeline.py
    /work/venv/bin/python bench/timeline.py --many 10 --gaps 15
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import BENCH_DIR, DOMAIN, EMAIL, PEBBLE_ENV, certsmith_env, certsmith_executable

from certsmith.testing.pebble import LOOPBACK, PebbleServer

# Runs inside the measured process: stamp log records relative to the spawn time.
BOOTSTRAP = r"""
import logging, os, sys, time
SPAWNED = float(os.environ["BENCH_SPAWNED"])
class Stamp(logging.Formatter):
    def format(self, record):
        return f"@{(record.created - SPAWNED) * 1000:8.1f} {record.name}: {record.getMessage()}"
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(Stamp())
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.DEBUG)
for noisy in ("httpcore", "asyncio", "httpx"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
mark = logging.getLogger("timeline")
mark.info("interpreter started, importing")
target = sys.argv[1]
sys.argv = sys.argv[1:]
import atexit
atexit.register(lambda: mark.info("main returned, interpreter exiting"))
if target == "cli":
    import certsmith.cli
    mark.info("certsmith.cli imported")
    sys.argv[0] = "certsmith"
    certsmith.cli.main()
else:
    import runpy
    runpy.run_path(target, run_name="__main__")
"""

STAMP = re.compile(r"^@\s*([0-9.]+) (\S+): (.*)$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--many", type=int, default=0, metavar="N", help="issue N certificates with issue_many")
    parser.add_argument("--gaps", type=int, default=8, help="how many of the largest gaps to list")
    parser.add_argument("--no-pycache", dest="pycache", action="store_false",
                        help="no private bytecode cache (see run.py)")
    parser.add_argument("--importtime", type=Path, metavar="FILE",
                        help="also write the measured run's `python -X importtime` lines to FILE")
    args = parser.parse_args(argv)
    exe = certsmith_executable()
    if exe is None:
        print("timeline: certsmith is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="certsmith-timeline-") as tmp, PebbleServer(env=PEBBLE_ENV) as pebble:
        root = Path(tmp)
        pycache = root / "pycache" if args.pycache and os.environ.get("PYTHONDONTWRITEBYTECODE") else None
        env = certsmith_env(pycache)
        state = root / "state"
        common = ["--directory", pebble.directory_url, "--ca-bundle", str(pebble.ca_bundle), "--state-dir", str(state)]
        subprocess.run([exe, *common, "-q", "account", "register", "--email", EMAIL, "--agree-tos"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        def target(prefix: str) -> list[str]:
            if args.many:
                many = [str(BENCH_DIR / "certsmith_many.py"), *common, "--http-port", str(pebble.http_port),
                        "--http-host", LOOPBACK, "--email", EMAIL]
                for i in range(1, args.many + 1):
                    many += ["--cert", f"{prefix}{i}.{DOMAIN},www.{prefix}{i}.{DOMAIN}"]
                return many
            return ["cli", *common, "issue", "-d", f"{prefix}1.{DOMAIN}", "-d", f"www.{prefix}1.{DOMAIN}",
                    "--http-port", str(pebble.http_port)]

        # An untimed run first fills the bytecode and page caches; then the measured one.
        for attempt in ("warm-up", "measured"):
            run_env = dict(env, BENCH_SPAWNED=repr(time.time()))
            if args.importtime and attempt == "measured":
                run_env["PYTHONPROFILEIMPORTTIME"] = "1"
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", BOOTSTRAP, *target(attempt[0])], env=run_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            wall = (time.perf_counter() - started) * 1000
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                print(f"timeline: the {attempt} run failed with status {done.returncode}", file=sys.stderr)
                return 1
    events = [(float(m[1]), m[2], m[3]) for line in done.stderr.splitlines() if (m := STAMP.match(line))]
    if args.importtime:
        args.importtime.write_text("".join(f"{line}\n" for line in done.stderr.splitlines()
                                           if line.startswith("import time:")))
    print("    ms  event")
    for stamp, name, message in events:
        print(f"{stamp:6.0f}  {name}: {message}")
    print(f"{wall:6.0f}  process ended (wall time seen by the parent)")
    first_acme = next((t for t, n, _ in events if n == "certsmith.acme"), None)
    last_acme = next((t for t, n, _ in reversed(events) if n == "certsmith.acme"), None)
    exiting = next((t for t, _, m in events if m.startswith("main returned")), wall)
    print()
    if first_acme is not None and last_acme is not None:
        print(f"spawn → first ACME response:   {first_acme:6.0f} ms  (interpreter, imports, keys, TLS set-up)")
        print(f"first → last ACME response:    {last_acme - first_acme:6.0f} ms")
        print(f"last ACME response → exit:     {wall - last_acme:6.0f} ms  (storing, interpreter shutdown)")
        print(f"  of which after main returned: {wall - exiting:6.0f} ms")
    gaps = sorted(((b[0] - a[0], a, b) for a, b in itertools.pairwise(events)), reverse=True)
    print(f"\nlargest gaps between consecutive events (total wall {wall:.0f} ms):")
    for gap, before, after in gaps[: args.gaps]:
        print(f"  {gap:6.0f} ms  after '{before[2][:70]}'\n            before '{after[2][:70]}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
