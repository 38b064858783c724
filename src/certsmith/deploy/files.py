"""The ``files`` deploy target: copies of the certificate where a server reads them.

PEM (certificate, chain, full chain, key), DER (the leaf) and PKCS#12 (key, leaf and
chain, password from ``CERTSMITH_PKCS12_PASSWORD``). Every file is replaced atomically
with its final owner and mode already set; a file whose content, owner and mode are
already right is not touched, so a second run changes nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from certsmith._atomic import replace_file
from certsmith.deploy.base import (
    BaseTarget,
    DeployContext,
    DeployOutcome,
    EnvVar,
    TargetInfo,
    TargetOption,
    parse_bool,
    read_env,
)
from certsmith.errors import ConfigError, DeployError

PASSWORD_VAR = "CERTSMITH_PKCS12_PASSWORD"  # noqa: S105 -- the variable's name, not a password
_PEM_KEYS = ("cert", "chain", "fullchain", "key")
_PATH_KEYS = (*_PEM_KEYS, "der", "pkcs12")
_SECRET_KEYS = frozenset({"key", "pkcs12"})  # files that hold the private key

OPTIONS = (
    TargetOption("cert", "path of the certificate (PEM)"),
    TargetOption("chain", "path of the intermediate certificates (PEM)"),
    TargetOption("fullchain", "path of the certificate followed by the intermediates (PEM)"),
    TargetOption("key", "path of the private key (PEM, PKCS#8)"),
    TargetOption("der", "path of the certificate in DER (the leaf only)"),
    TargetOption("pkcs12", "path of a PKCS#12 file with key, certificate and chain (password from the environment)"),
    TargetOption("owner", "user owning the files (name or uid; default: the user running certsmith)"),
    TargetOption("group", "group of the files (name or gid; with it the key is 0640 by default)"),
    TargetOption("mode", "octal mode of the certificate files; key files get at most 0640 of it", default="0644"),
    TargetOption("legacy", "true: PKCS#12 with 3DES/SHA-1 for old Java and Windows (default AES-256/PBKDF2)",
                 default="false"),
)
ENV = (EnvVar(PASSWORD_VAR, "password of the PKCS#12 file (needed with pkcs12=)", secret=True),)


@dataclass(frozen=True)
class FilesConfig:
    """Absolute paths by kind, ownership (-1: the process's own) and modes."""

    paths: tuple[tuple[str, Path], ...]
    uid: int = -1
    gid: int = -1
    mode: int = 0o644
    key_mode: int = 0o600
    legacy: bool = False
    password: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        paths: list[tuple[str, Path]] = []
        seen: dict[Path, str] = {}
        for kind in _PATH_KEYS:
            text = options.get(kind)
            if not text:
                continue
            path = Path(text)
            if not path.is_absolute():
                raise ConfigError(f"files: {kind}={text} must be an absolute path (renewals run elsewhere)")
            if path.name in ("", ".", ".."):
                raise ConfigError(f"files: {kind}={text} must name a file")
            if path in seen:
                raise ConfigError(f"files: {seen[path]}= and {kind}= are the same file {path}")
            seen[path] = kind
            paths.append((kind, path))
        uid = _user(options["owner"]) if options.get("owner") else -1
        gid = _group(options["group"]) if options.get("group") else -1
        mode = _mode(options["mode"]) if options.get("mode") else 0o644
        if options.get("mode"):
            key_mode = mode & 0o640
        else:
            key_mode = 0o640 if gid != -1 else 0o600
        legacy = parse_bool("files: legacy", options["legacy"]) if options.get("legacy") else False
        password: bytes | None = None
        if "pkcs12" in seen.values():
            values = read_env(env, ENV, "files")
            if PASSWORD_VAR not in values:
                raise ConfigError(
                    f"files: pkcs12= needs the password in {PASSWORD_VAR} or {PASSWORD_VAR}_FILE "
                    "(the environment or the env file; it is never stored)"
                )
            password = values[PASSWORD_VAR].encode()
        elif options.get("legacy"):
            raise ConfigError("files: legacy= applies to pkcs12= only")
        return cls(tuple(paths), uid, gid, mode, key_mode, legacy, password)


def _user(text: str) -> int:
    import pwd

    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise ConfigError(f"files: owner={text}: no such user") from None


def _group(text: str) -> int:
    import grp

    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"files: group={text}: no such group") from None


def _mode(text: str) -> int:
    digits = text.strip().removeprefix("0o")
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
        raise ConfigError(f"files: mode={text} is not an octal mode such as 0644 or 640")
    mode = int(digits, 8)
    if mode > 0o777:
        raise ConfigError(f"files: mode={text}: set-user-ID, set-group-ID and sticky bits are not allowed")
    if not mode & 0o400:
        raise ConfigError(f"files: mode={text} would not let the owner read the files")
    return mode


class FilesTarget(BaseTarget[FilesConfig]):
    info: ClassVar[TargetInfo] = TargetInfo(
        name="files",
        title="Files (PEM, DER, PKCS#12)",
        description="Copies the certificate, chain and key to the given paths, atomically, with owner, group "
        "and mode; unchanged files are not rewritten.",
        options=OPTIONS,
        env=ENV,
        example="certsmith issue -d example.com --deploy "
        "files:fullchain=/etc/nginx/tls/example.pem,key=/etc/nginx/tls/example.key,group=www-data",
        required_one_of=_PATH_KEYS,
    )

    @classmethod
    def from_options(cls, options: Mapping[str, str], env: Mapping[str, str]) -> Self:
        return cls(FilesConfig.from_options(options, env))

    async def deploy(self, context: DeployContext) -> DeployOutcome:
        config = self.config
        outcome = DeployOutcome()
        pkcs12_format = "legacy" if config.legacy else "modern"
        for kind, path in config.paths:
            secret = kind in _SECRET_KEYS
            if secret and context.key_pem is None:
                raise DeployError(f"{kind}={path}: the lineage has no private key (it was issued for your own CSR)")
            mode = config.key_mode if secret else config.mode
            existing = _read(path)
            if kind == "pkcs12":
                same = (
                    existing is not None
                    and context.state.get("pkcs12_format") == pkcs12_format
                    and _pkcs12_matches(existing, config.password, context)
                )
                data = b"" if same else _pkcs12(context, config.password, legacy=config.legacy)
            else:
                data = _der(context.cert_pem) if kind == "der" else _pem(kind, context)
                same = existing == data
            if same:
                fixed = _fix_attributes(path, mode, config.uid, config.gid)
                (outcome.changed if fixed else outcome.unchanged).append(
                    f"{fixed} of {path}" if fixed else str(path)
                )
                continue
            try:
                replace_file(path, data, mode, uid=config.uid, gid=config.gid)
            except FileNotFoundError:
                raise DeployError(f"cannot write {path}: the directory {path.parent} does not exist") from None
            except OSError as exc:
                raise DeployError(f"cannot write {path}: {exc.strerror or exc}") from None
            outcome.changed.append(f"wrote {path}")
            if kind == "pkcs12":
                context.state["pkcs12_format"] = pkcs12_format
        return outcome


def _read(path: Path) -> bytes | None:
    """The file's content; ``None`` when it is missing, unreadable or a symbolic link (replaced by a file)."""
    try:
        if path.is_symlink():
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise DeployError(f"{path} is a directory; give a file's path") from None
    except OSError:
        return None  # unreadable: it will be replaced, and that write reports a real problem


def _pem(kind: str, context: DeployContext) -> bytes:
    if kind == "cert":
        return context.cert_pem
    if kind == "chain":
        return context.chain_pem
    if kind == "fullchain":
        return context.fullchain_pem
    assert context.key_pem is not None
    return context.key_pem


def _der(cert_pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)


def _pkcs12(context: DeployContext, password: bytes | None, *, legacy: bool) -> bytes:
    """Key, leaf and chain; AES-256-CBC with PBKDF2/SHA-256 and a SHA-256 MAC, or 3DES/SHA-1 when ``legacy``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    assert context.key_pem is not None and password is not None
    key = serialization.load_pem_private_key(context.key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise DeployError("the lineage's key type cannot be put into a PKCS#12 file")
    cert = x509.load_pem_x509_certificate(context.cert_pem)
    chain = x509.load_pem_x509_certificates(context.chain_pem) if context.chain_pem.strip() else []
    mac: hashes.HashAlgorithm
    if legacy:
        algorithm, mac = pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC, hashes.SHA1()  # noqa: S303 -- asked for with legacy=true
    else:
        algorithm, mac = pkcs12.PBES.PBESv2SHA256AndAES256CBC, hashes.SHA256()
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50000 if not legacy else 2048)
        .key_cert_algorithm(algorithm)
        .hmac_hash(mac)
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(context.lineage.encode(), key, cert, chain, encryption)


def _pkcs12_matches(data: bytes, password: bytes | None, context: DeployContext) -> bool:
    """Whether the PKCS#12 ``data`` opens with ``password`` and holds exactly this key, leaf and chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        return False  # another password, or not a PKCS#12 file
    if key is None or cert is None or context.key_pem is None:
        return False
    stored_key = serialization.load_pem_private_key(context.key_pem, password=None)
    der = serialization.Encoding.DER
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    chain = x509.load_pem_x509_certificates(context.chain_pem) if context.chain_pem.strip() else []
    return (
        key.private_bytes(der, pkcs8, none) == stored_key.private_bytes(der, pkcs8, none)
        and cert == x509.load_pem_x509_certificate(context.cert_pem)
        and list(extra) == chain
    )


def _fix_attributes(path: Path, mode: int, uid: int, gid: int) -> str:
    """Set mode and ownership of an up-to-date file when they differ; says what it changed ('' for nothing)."""
    try:
        info = path.lstat()
        fixed: list[str] = []
        if (uid != -1 and info.st_uid != uid) or (gid != -1 and info.st_gid != gid):
            os.chown(path, uid, gid, follow_symlinks=False)
            fixed.append("owner")
        if stat.S_IMODE(info.st_mode) != mode or fixed:  # chown may clear set-ID bits; set the mode again
            if stat.S_IMODE(info.st_mode) != mode:
                fixed.append(f"mode {mode:04o}")
            os.chmod(path, mode)
    except OSError as exc:
        raise DeployError(f"cannot set the owner or mode of {path}: {exc.strerror or exc}") from None
    return " and ".join(fixed)
