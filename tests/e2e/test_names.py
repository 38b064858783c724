"""Names as users type them: IDNA 2008, the longest names, names that look like options."""

from __future__ import annotations

from cryptography import x509

from tests.conftest import Cli


def _sans(cli: Cli, lineage: str) -> list[str]:
    pem = (cli.state_dir / "certificates" / lineage / "cert.pem").read_bytes()
    extension = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return extension.value.get_values_for_type(x509.DNSName)


def test_a_german_sharp_s_is_certified_as_itself_not_as_ss(registered_cli: Cli) -> None:
    cli = registered_cli
    cli.run("issue", "-d", "straße.example.com", *cli.http_args())
    assert _sans(cli, "xn--strae-oqa.example.com") == ["xn--strae-oqa.example.com"]
    assert not (cli.state_dir / "certificates" / "strasse.example.com").exists()


def test_symbols_and_malformed_a_labels_are_refused_with_the_reason(registered_cli: Cli) -> None:
    cli = registered_cli
    mark = cli.pebble.log_mark()
    for name in ("☃.example.com", "xn--zz.example.com"):
        result = cli.run("issue", "-d", name, *cli.http_args(), check=False)
        assert result.returncode != 0
        assert "not a valid domain name" in result.stderr and "Traceback" not in result.stderr
    assert cli.pebble.orders_created(mark) == []


def test_a_253_character_name_is_issued_under_a_shortened_lineage_name(registered_cli: Cli) -> None:
    cli = registered_cli
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49, "example.com"])
    assert len(name) == 253
    result = cli.run("--json", "issue", "-d", name, *cli.http_args())
    lineages = [p.name for p in (cli.state_dir / "certificates").iterdir() if not p.name.startswith(".")]
    assert len(lineages) == 1 and len(lineages[0]) <= 200 and lineages[0] in result.stdout
    assert _sans(cli, lineages[0]) == [name]
    assert lineages[0] in cli.run("list").stdout


def test_a_lineage_name_that_reads_as_an_option_is_refused(registered_cli: Cli) -> None:
    cli = registered_cli
    mark = cli.pebble.log_mark()
    result = cli.run("issue", "-d", "dash.example.com", "--name=-rf", *cli.http_args(), check=False)
    assert result.returncode != 0 and "invalid certificate name '-rf'" in result.stderr
    assert cli.pebble.orders_created(mark) == []
