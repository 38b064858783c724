"""Names, CSRs and certificate facts."""

from __future__ import annotations

import asyncio
import datetime
import re
import threading
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certsmith.crypto import (
    Identifier,
    ari_cert_id,
    check_issued,
    generate_key,
    generate_key_async,
    key_type_of,
    load_csr,
    load_private_key,
    make_csr,
    parse_identifier,
    parse_identifiers,
    private_key_pem,
)
from certsmith.errors import ConfigError, UnexpectedCertificate
from certsmith.jose import b64u_decode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", Identifier("dns", "example.com")),
        ("example.com.", Identifier("dns", "example.com")),
        ("*.example.com", Identifier("dns", "*.example.com")),
        ("bücher.example", Identifier("dns", "xn--bcher-kva.example")),
        ("straße.example.com", Identifier("dns", "xn--strae-oqa.example.com")),  # IDNA 2008: not strasse
        ("XN--Strae-OQA.example.com", Identifier("dns", "xn--strae-oqa.example.com")),
        ("\uff25\uff58ample.com", Identifier("dns", "example.com")),  # UTS #46 maps full-width letters
        ("*.Bücher.example.", Identifier("dns", "*.xn--bcher-kva.example")),
        ("192.0.2.1", Identifier("ip", "192.0.2.1")),
        ("2001:DB8::0:1", Identifier("ip", "2001:db8::1")),
        ("[::1]", Identifier("ip", "::1")),
    ],
)
def test_identifiers_are_normalised(text: str, expected: Identifier) -> None:
    assert parse_identifier(text) == expected


@pytest.mark.parametrize(
    "text", ["", "localhost", "a..example.com", "-a.example.com", "a_b.example.com", "*.*.example.com",
             "a.*.example.com", "*example.com", "x" * 64 + ".example.com", "1.2.3", "☃.example.com",
             "xn--zz.example.com", "ab--c.example.com", ".example.com", "a" * 63 + "." + "b" * 63 + "." + "c" * 63
             + "." + "d" * 62 + ".com"]
)
def test_bad_names_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_identifier(text)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 400


def test_a_253_character_name_is_accepted() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "com"])
    assert len(name) == 253
    assert parse_identifier(name).value == name


def _by_idna(name: str) -> str | None:
    """What parse_identifier accepted before ASCII names skipped the idna package: every name through it."""
    import idna

    host = name.rstrip(".")
    if not host or ".." in host or host.startswith("."):
        return None
    try:
        encoded = idna.encode(host, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None
    labels = encoded.split(".")
    ldh = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    if len(labels) < 2 or len(encoded) > 253 or not all(ldh.match(label) for label in labels):
        return None
    return None if labels[-1].isdigit() else encoded


def test_ascii_names_are_judged_as_idna_judges_them() -> None:
    """ASCII names skip the idna package (its tables cost every issue milliseconds) with the same outcome."""
    import random

    generator = random.Random(8555)
    alphabet = "abcXYZ019-_. "
    names = ["Example.COM", "ab--cd.example", "xn--strae-oqa.de", "xn--zz.example", "XN--STRAE-OQA.de",
             "a-.example", "-a.example", "a_b.example", "a b.example", "1.2.3.4x", "example.123",
             ("a" * 63) + ".example", ("a" * 64) + ".example", ".".join(["abcdefghi"] * 25) + ".ab"]
    names += ["".join(generator.choice(alphabet) for _ in range(generator.randint(1, 14))) for _ in range(20000)]
    names += [generator.choice(["xn--", "ab", "a-", "--"]) + name for name in names[-3000:]]
    for name in names:
        try:
            identifier = parse_identifier(name)
        except ConfigError:
            got = None
        else:
            if identifier.type != "dns":
                continue
            got = identifier.value
        assert got == _by_idna(name.strip()), name


def test_duplicates_are_dropped_in_order() -> None:
    assert parse_identifiers(["b.example.com", "a.example.com", "B.example.com"]) == [
        Identifier("dns", "b.example.com"),
        Identifier("dns", "a.example.com"),
    ]


@pytest.mark.parametrize("key_type", ["ec256", "ec384", "rsa2048"])
def test_csr_round_trip_with_ip_san_and_no_ip_in_cn(key_type: str) -> None:
    key = generate_key(key_type)
    assert key_type_of(key) == key_type
    idents = parse_identifiers(["www.example.com", "192.0.2.7", "*.example.com"])
    der, parsed = load_csr(make_csr(key, idents))
    assert set(parsed) == set(idents)
    csr = x509.load_der_x509_csr(der)
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["www.example.com"]
    only_ip = x509.load_der_x509_csr(make_csr(key, parse_identifiers(["192.0.2.7"])))
    assert not only_ip.subject.get_attributes_for_oid(NameOID.COMMON_NAME)


def test_private_key_round_trip_and_garbage() -> None:
    key = generate_key()
    assert load_private_key(private_key_pem(key)).private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as info:
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert "AAAA" not in str(info.value)


def test_ari_cert_id_matches_rfc9773_example() -> None:
    """RFC 9773 §4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
    serial 0x87654321 -> aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE (the leading 0x00 is kept)."""
    issuer_key = generate_key()
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(issuer_key.public_key())
        .serial_number(0x87654321)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier(b64u_decode("aYhba4dGQEHhs3uEe6CuLN4ByNQ"), None, None), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_identifier_types_are_an_enum_and_others_are_refused() -> None:
    from certsmith.crypto import IdentifierType

    assert Identifier("dns", "a.test").type is IdentifierType.DNS
    assert parse_identifier("192.0.2.1").type is IdentifierType.IP
    with pytest.raises(ValueError):
        Identifier("email", "a@b.test")  # type: ignore[arg-type]


# -- what the CA returned is what was ordered ---------------------------------------------


def _certificate(
    subject_key: Any, issuer_key: Any, names: list[str], *, issuer: str = "Test CA", subject: str = "leaf"
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_check_issued_accepts_the_ordered_certificate_and_refuses_anything_else() -> None:
    ca_key, leaf_key, other_key = generate_key(), generate_key(), generate_key()
    identifiers = parse_identifiers(["example.com", "*.example.com"])
    csr = make_csr(leaf_key, identifiers)
    intermediate = _certificate(ca_key, ca_key, [], subject="Test CA")
    good = _certificate(leaf_key, ca_key, ["example.com", "*.example.com"]) + intermediate
    assert check_issued(good, csr, identifiers).subject.rfc4514_string() == "CN=leaf"

    cases = {
        "another key": _certificate(other_key, ca_key, ["example.com", "*.example.com"]) + intermediate,
        "names not ordered: evil.example": _certificate(leaf_key, ca_key, ["example.com", "*.example.com",
                                                                          "evil.example"]) + intermediate,
        "ordered names missing: *.example.com": _certificate(leaf_key, ca_key, ["example.com"]) + intermediate,
        "without subjectAltName": _certificate(leaf_key, ca_key, []) + intermediate,
        "chain is broken": _certificate(leaf_key, other_key, ["example.com", "*.example.com"]) + intermediate,
        "not a PEM chain": b"<html>hello</html>",
    }
    for expected, pem in cases.items():
        with pytest.raises(UnexpectedCertificate, match=re.escape(expected)):
            check_issued(pem, csr, identifiers)


def test_async_key_generation_uses_a_thread_only_for_rsa() -> None:
    """EC keys are made on the loop (microseconds: a thread would cost more than the key);
    RSA keys, slow enough to stall concurrent orders, in the loop's worker threads."""

    async def run() -> list[tuple[str, str, int]]:
        made = []
        for key_type in ("ec256", "ec384", "rsa2048"):
            before = threading.active_count()
            key = await generate_key_async(key_type)
            made.append((key_type, key_type_of(key), threading.active_count() - before))
        with pytest.raises(ConfigError, match="unknown key type 'ed25519'"):
            await generate_key_async("ed25519")
        return made

    assert asyncio.run(run()) == [("ec256", "ec256", 0), ("ec384", "ec384", 0), ("rsa2048", "rsa2048", 1)]
