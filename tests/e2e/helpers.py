"""Shared checks for the end-to-end tests: chain verification and DNS hook scripts."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from certsmith.testing.pebble import PebbleServer


def verify_chain(pebble: PebbleServer, lineage_dir: Path, tmp_path: Path, root_index: int = 0) -> x509.Certificate:
    """``openssl verify`` the lineage's cert against Pebble root ``root_index``; return the leaf."""
    root = tmp_path / f"root{root_index}.pem"
    root.write_bytes(pebble.management_get(f"/roots/{root_index}"))
    result = subprocess.run(
        [
            "openssl", "verify",
            "-CAfile", str(root),
            "-untrusted", str(lineage_dir / "chain.pem"),
            str(lineage_dir / "cert.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fullchain = (lineage_dir / "fullchain.pem").read_bytes()
    assert fullchain.startswith((lineage_dir / "cert.pem").read_bytes().strip())
    return x509.load_pem_x509_certificate((lineage_dir / "cert.pem").read_bytes())


def san_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


def write_challtestsrv_hook(tmp_path: Path, management_url: str, log: Path, publish: bool = True) -> Path:
    """An EXEC_PATH script that publishes TXT records through pebble-challtestsrv.

    It logs every call as a JSON line to ``log``; with ``publish=False`` it only logs.
    """
    script = tmp_path / "dns-hook.py"
    script.write_text(
        f"""#!{sys.executable}
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
with open({str(log)!r}, "a") as f:
    f.write(json.dumps([action, fqdn, value]) + "\\n")
if {publish!r}:
    path = "/set-txt" if action == "present" else "/clear-txt"
    body = {{"host": fqdn, "value": value}} if action == "present" else {{"host": fqdn}}
    req = urllib.request.Request({management_url!r} + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).read()
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def hook_calls(log: Path) -> list[tuple[str, str, str]]:
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content, to prove nothing was written."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
