"""Keys, CSRs, identifiers and certificate facts.

Keys: RSA 2048/3072/4096 and EC P-256/P-384. CSRs carry every name as a SAN
(IP addresses as iPAddress SANs, never in the CN). Certificate chains from the CA
are parsed strictly: a PEM block that is not a CERTIFICATE is rejected (RFC 8555
§11.4). Error messages never include key material.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certsmith.errors import ConfigError, UnexpectedCertificate
from certsmith.jose import PrivateKey, b64u_encode

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")
DEFAULT_KEY_TYPE = "ec256"

_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072", "rsa4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ConfigError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


async def generate_key_async(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """:func:`generate_key` for the event loop: EC keys at once, RSA keys in a worker thread.

    An EC key takes microseconds, less than handing it to a thread (which also costs the
    process a thread and its memory); an RSA key takes tens to hundreds of milliseconds,
    which would stall the other orders of a concurrent run.
    """
    if not key_type.startswith("rsa"):
        return generate_key(key_type)
    import asyncio

    return await asyncio.to_thread(generate_key, key_type)


def key_type_of(key: PrivateKey) -> str:
    """The :data:`KEY_TYPES` name of ``key``."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size not in (2048, 3072, 4096):
            raise ConfigError(f"RSA keys must be 2048, 3072 or 4096 bits, not {key.key_size}")
        return f"rsa{key.key_size}"
    names = {"secp256r1": "ec256", "secp384r1": "ec384"}
    if key.curve.name not in names:
        raise ConfigError(f"EC keys must use P-256 or P-384, not {key.curve.name}")
    return names[key.curve.name]


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, as web servers expect it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(data: bytes, source: str = "private key") -> PrivateKey:
    """Parse a PEM private key; only RSA and P-256/P-384 EC keys are accepted."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{source} is not an RSA or EC key")
    key_type_of(key)
    return key


class IdentifierType(StrEnum):
    """The identifier types certsmith certifies: DNS names (RFC 8555) and IP addresses (RFC 8738)."""

    DNS = "dns"
    IP = "ip"


@dataclass(frozen=True, order=True)
class Identifier:
    """An ACME identifier (RFC 8555 §7.1.4, RFC 8738); ``ValueError`` for another type."""

    type: IdentifierType
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", IdentifierType(self.type))

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}

    @property
    def wildcard(self) -> bool:
        return self.value.startswith("*.")


def parse_identifier(name: str) -> Identifier:
    """Validate and normalise a domain name or IP address as the user typed it.

    Domain names are lower-cased and IDNA 2008 (UTS #46) encoded, a trailing dot dropped;
    a wildcard is only allowed as the whole leftmost label (``*.example.com``). IP addresses are written in canonical
    form (RFC 8738 §3, RFC 5952).
    """
    text = name.strip()
    if not text:
        raise ConfigError("empty domain name")
    try:
        return Identifier(IdentifierType.IP, str(ipaddress.ip_address(text.strip("[]"))))
    except ValueError:
        pass
    wildcard = text.startswith("*.")
    host = text[2:] if wildcard else text
    host = host.rstrip(".")
    if "*" in host:
        raise ConfigError(f"{name!r}: a wildcard must be the whole leftmost label, as in *.example.com")
    ascii_host = _idna_2008(name, host)
    labels = ascii_host.split(".")
    if len(labels) < 2 or len(ascii_host) > 253 or not all(map(_is_ldh_label, labels)):
        raise ConfigError(f"{name!r} is not a valid domain name (need at least two labels of a-z, 0-9, -)")
    if labels[-1].isdigit():
        raise ConfigError(f"{name!r} is not a valid domain name or IP address")
    return Identifier(IdentifierType.DNS, ("*." if wildcard else "") + ascii_host)


def _is_ldh_label(label: str) -> bool:
    """1 to 63 of a-z, 0-9 and -, not starting or ending with - (a plain check: no regex compiled at import)."""
    return 0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" and _LABEL_CHARACTERS.issuperset(label)


def _idna_2008(name: str, host: str) -> str:
    """``host`` in lower-case A-labels by IDNA 2008 with the UTS #46 mapping (non-transitional).

    ``straße`` stays a different name from ``strasse`` (``xn--strae-oqa``), as registries and
    browsers treat it; symbols such as ``☃`` and malformed A-labels such as ``xn--zz`` are refused.
    """
    if not host or ".." in host or host.startswith("."):
        raise ConfigError(f"{name!r} is not a valid domain name: it has an empty label")
    if host.isascii() and not any(label[2:4] == "--" for label in host.split(".")):
        # UTS #46 maps ASCII to lower case and nothing else; what IDNA would refuse besides (a letter,
        # digit or hyphen rule) the caller's LDH check refuses. A-labels (xn--) are checked by idna.
        return host.lower()
    import idna  # the tables cost milliseconds and half a megabyte: only for names that need them

    try:
        return idna.encode(host, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ConfigError(f"{name!r} is not a valid domain name: {exc}") from None
    except UnicodeError:
        raise ConfigError(f"{name!r} is not a valid domain name") from None


def parse_identifiers(names: Iterable[str]) -> list[Identifier]:
    """Parse, validate and de-duplicate names, keeping the user's order."""
    seen: dict[Identifier, None] = {}
    for name in names:
        seen.setdefault(parse_identifier(name), None)
    if not seen:
        raise ConfigError("no domain names given; use -d NAME")
    return list(seen)


def make_csr(key: PrivateKey, identifiers: Sequence[Identifier]) -> bytes:
    """A DER CSR with every identifier as a SAN; the CN is the first short DNS name."""
    sans: list[x509.GeneralName] = []
    for ident in identifiers:
        if ident.type == "ip":
            sans.append(x509.IPAddress(ipaddress.ip_address(ident.value)))
        else:
            sans.append(x509.DNSName(ident.value))
    builder = x509.CertificateSigningRequestBuilder()
    common = next((i.value for i in identifiers if i.type == "dns" and len(i.value) <= 64), None)
    builder = builder.subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    is_p384 = isinstance(key, ec.EllipticCurvePrivateKey) and key.key_size == 384
    return builder.sign(key, hashes.SHA384() if is_p384 else hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def load_csr(data: bytes, source: str = "CSR") -> tuple[bytes, list[Identifier]]:
    """Parse a PEM or DER CSR; returns its DER and the identifiers it asks for."""
    try:
        if b"-----BEGIN" in data:
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError:
        raise ConfigError(f"{source} is not a PEM or DER certificate signing request") from None
    if not csr.is_signature_valid:
        raise ConfigError(f"{source} has an invalid signature")
    names: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode()
        names.append(value)
    if not names:
        raise ConfigError(f"{source} names no domain (no subjectAltName and no CN)")
    return csr.public_bytes(serialization.Encoding.DER), parse_identifiers(names)


def split_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Parse a PEM chain, rejecting any block that is not a CERTIFICATE (RFC 8555 §11.4)."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise ValueError("no PEM certificate in the response")
    certs: list[x509.Certificate] = []
    for label, _ in blocks:
        if label != b"CERTIFICATE":
            raise ValueError(f"the chain contains a {label.decode()!r} block; only certificates are allowed")
    for match in _PEM_BLOCK.finditer(data):
        certs.append(x509.load_pem_x509_certificate(match.group(0)))
    return certs


def check_issued(pem: bytes, csr_der: bytes, identifiers: Sequence[Identifier]) -> x509.Certificate:
    """The leaf of ``pem`` after checking it is what was ordered; :class:`UnexpectedCertificate` if not.

    The leaf must carry the CSR's public key and name exactly ``identifiers`` (no more, no
    fewer), and every certificate of the chain must be signed by the next one. A CA that is
    broken or hostile must not get another name's certificate, or one for a key we do not
    hold, installed as this lineage.
    """
    try:
        chain = split_pem_chain(pem)
    except ValueError as exc:
        raise UnexpectedCertificate(f"the CA's certificate download is not a PEM chain: {exc}") from None
    leaf = chain[0]
    csr = x509.load_der_x509_csr(csr_der)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != csr.public_key().public_bytes(*spki):
        raise UnexpectedCertificate("the CA returned a certificate for another key than the one in the CSR")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise UnexpectedCertificate("the CA returned a certificate without subjectAltName") from None
    certified = {name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)}
    certified |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    ordered = {ident.value for ident in identifiers}
    if certified != ordered:
        extra, missing = sorted(certified - ordered), sorted(ordered - certified)
        said = "; ".join(
            part for part in (
                f"names not ordered: {', '.join(extra)[:300]}" if extra else "",
                f"ordered names missing: {', '.join(missing)[:300]}" if missing else "",
            ) if part
        )
        raise UnexpectedCertificate(f"the CA returned a certificate for other names ({said})")
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise UnexpectedCertificate(
                f"the CA's chain is broken: {child.subject.rfc4514_string()[:200]} is not signed by "
                f"{parent.subject.rfc4514_string()[:200]}"
            ) from None
    return leaf


def issuer_common_name(cert: x509.Certificate) -> str:
    """The issuer's CN, or the whole issuer DN when there is no CN."""
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode()
    return cert.issuer.rfc4514_string()


def ari_cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 §4.1 CertID: base64url(AKI keyIdentifier) "." base64url(serial DER content)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ValueError("certificate has no Authority Key Identifier; ARI is not possible") from None
    if aki.key_identifier is None:
        raise ValueError("certificate's Authority Key Identifier has no keyIdentifier")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # keeps a leading 0x00 when needed
    return f"{b64u_encode(aki.key_identifier)}.{b64u_encode(serial_bytes)}"
