"""A DNS provider from another package, found through the ``certsmith.dns_providers`` entry point.

``tests/support/plugin_example`` is a minimal third-party package. The test "installs" it
the way pip lays out a wheel -- the module plus a ``*.dist-info`` with ``METADATA`` and an
``entry_points.txt`` made from the package's own pyproject.toml -- into a temporary
directory that only the certsmith subprocesses get on their ``PYTHONPATH``. Then
``certsmith dns list`` (and ``--json``) shows the provider and ``certsmith issue --dns
example-challtestsrv`` gets an apex + wildcard certificate from Pebble, whose
challtestsrv the example provider writes to.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import dns.resolver
import pytest

from tests.conftest import Cli, clean_env
from tests.e2e.helpers import san_names, verify_chain

EXAMPLE = Path(__file__).resolve().parents[1] / "support" / "plugin_example"
NAME = "example-challtestsrv"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like site-packages after ``pip install tests/support/plugin_example``."""
    target = tmp_path_factory.mktemp("site")
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "certsmith_example_dns", target / "certsmith_example_dns")
    dist_name = project["name"].replace("-", "_")
    dist_info = target / f"{dist_name}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {value}" for name, value in entries.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def env_with(site: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(PYTHONPATH=path, **extra)


def test_the_plugin_is_listed_only_when_installed(cli: Cli, site: Path) -> None:
    assert NAME not in cli.run("dns", "list").stdout
    human = cli.run("dns", "list", env=env_with(site)).stdout
    assert NAME in human and "EXAMPLE_CHALLTESTSRV_URL" in human
    listed = json.loads(cli.run("--json", "dns", "list", env=env_with(site)).stdout)
    [plugin] = [p for p in listed["providers"] if p["name"] == NAME]
    assert plugin["title"] == "pebble-challtestsrv (example plug-in)"
    assert [v["name"] for v in plugin["env"] if v["required"]] == ["EXAMPLE_CHALLTESTSRV_URL"]


def test_a_missing_variable_of_the_plugin_is_named(registered_cli: Cli, site: Path) -> None:
    result = registered_cli.run("issue", "-d", "plugin.example.com", "--dns", NAME, env=env_with(site), check=False)
    assert result.returncode != 0
    assert "EXAMPLE_CHALLTESTSRV_URL" in result.stderr


def test_the_plugin_issues_apex_and_wildcard(registered_cli: Cli, site: Path, tmp_path: Path) -> None:
    cli = registered_cli
    srv = cli.pebble.challtestsrv
    assert srv is not None
    env = env_with(site, EXAMPLE_CHALLTESTSRV_URL=srv.management_url)
    cli.run(
        "issue", "-d", "plugin.example.com", "-d", "*.plugin.example.com",
        "--dns", NAME, "--dns-resolver", srv.dns_address, env=env,
    )  # fmt: skip
    leaf = verify_chain(cli.pebble, cli.state_dir / "certificates" / "plugin.example.com", tmp_path)
    assert san_names(leaf) == {"plugin.example.com", "*.plugin.example.com"}
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = srv.dns_port
    with pytest.raises((dns.resolver.NoAnswer, dns.resolver.NXDOMAIN)):
        resolver.resolve("_acme-challenge.plugin.example.com.", "TXT")  # cleaned up
