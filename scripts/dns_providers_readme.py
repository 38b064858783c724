#!/usr/bin/env python3
"""Regenerate the DNS provider section of README.md from the providers' metadata.

    python scripts/dns_providers_readme.py          # rewrite README.md
    python scripts/dns_providers_readme.py --check  # exit 1 when README.md is out of date

The section lies between ``<!-- dns-providers:start -->`` and ``<!-- dns-providers:end -->``;
only built-in providers are documented, so installed plug-ins never change the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from certsmith.dns.base import builtin_providers, provider_class  # noqa: E402
from certsmith.dns.docs import providers_markdown, replace_section  # noqa: E402


def expected_readme(readme: str) -> str:
    """``readme`` with its provider section regenerated."""
    infos = [provider_class(name).info for name in builtin_providers()]
    return replace_section(readme, providers_markdown(infos))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = expected_readme(current)
    if current == wanted:
        return 0
    if args.check:
        print(f"{args.readme}: the DNS provider section is out of date; run {Path(__file__).name}", file=sys.stderr)
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme}: DNS provider section updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
