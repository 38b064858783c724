"""Issue several certificates concurrently from one process with ``Manager.issue_many``.

The benchmark (``bench/run.py``) starts this as a child process so that its wall time,
peak RSS and ACME requests are measured exactly like those of the command-line clients.
It registers the account first when the state directory has none, as
``certsmith issue --email ... --agree-tos`` does, and prints one JSON document.

    python bench/certsmith_many.py --directory URL --ca-bundle CA.pem --state-dir DIR \
        --http-port 5002 --email x@example.com --cert a.test,www.a.test --cert b.test,www.b.test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from certsmith.errors import CertsmithError
from certsmith.manager import Manager
from certsmith.settings import CertificateRequest, ChallengeSettings
from certsmith.storage.files import FileStore


async def issue_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = ChallengeSettings(challenge="http-01", http_port=args.http_port, http_host=args.http_host)
    requests = [
        CertificateRequest(names=tuple(group.split(",")), challenge=settings, key_type=args.key_type)
        for group in args.cert
    ]
    async with Manager(FileStore(Path(args.state_dir)), args.directory, ca_bundle=args.ca_bundle) as manager:
        await manager.accounts.ensure(manager.directory_url, email=[args.email], agree_tos=True)
        results = await manager.issue_many(requests)
    out: list[dict[str, Any]] = []
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, CertsmithError):
            out.append({"names": list(request.names), "ok": False, "error": str(result)})
        else:
            out.append({"ok": True, **result.to_json()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directory", required=True, help="ACME directory URL")
    parser.add_argument("--ca-bundle", required=True, help="PEM roots for the CA's TLS certificate")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--http-port", type=int, required=True, help="port of the built-in http-01 server")
    parser.add_argument("--http-host", default="127.0.0.1", help="address of the built-in http-01 server")
    parser.add_argument("--email", required=True)
    parser.add_argument("--key-type", default="ec256")
    parser.add_argument("--cert", action="append", required=True, help="comma-separated names of one certificate")
    args = parser.parse_args(argv)
    results = asyncio.run(issue_all(args))
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
