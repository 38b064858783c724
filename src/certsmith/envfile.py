"""Environment files: the variables an unattended ``certsmith renew`` needs.

A timer or cron job runs with an almost empty environment, so the secrets of DNS
providers and deploy targets come from a file of ``KEY=VALUE`` lines instead::

    # /etc/certsmith/env  (mode 0600, owned by root)
    export ALIDNS_ACCESS_KEY_ID=LTAI...
    ALIDNS_ACCESS_KEY_SECRET_FILE=/etc/certsmith/alidns-secret
    EXEC_PATH='/usr/local/bin/dns hook'

The syntax is the common subset of POSIX shell assignments, so the same file can
be sourced by a shell: blank lines and ``#`` comments, an optional ``export``,
values unquoted, in single quotes (taken literally) or in double quotes (where
``\\``, ``"``, ``$`` and a backquote may be escaped with a backslash). Nothing is
expanded: ``$HOME`` stays ``$HOME``. A line certsmith cannot read is refused with
the file and line number, never with its content, which may be a secret.

Because the file holds secrets it must be a regular file owned by the user
running certsmith, without any permission for group or others.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from certsmith.errors import ConfigError

__all__ = ["SYSTEM_ENV_FILE", "EnvFileError", "default_env_file", "environment_with", "load_env_file"]

SYSTEM_ENV_FILE = Path("/etc/certsmith/env")

_DOUBLE_QUOTE_ESCAPABLE = frozenset('\\"$`')


class EnvFileError(ConfigError):
    """An environment file is unsafe or cannot be parsed."""


def default_env_file(*, euid: int | None = None, system_file: Path = SYSTEM_ENV_FILE) -> Path | None:
    """``/etc/certsmith/env`` when running as root and it exists, else ``None``.

    Only root gets a default: a system-wide file of secrets is root's by design,
    and another user must name their file explicitly.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    return system_file if os.path.lexists(system_file) else None


def environment_with(env_file: Path | None, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (normally ``os.environ``) completed with the variables of ``env_file``.

    The file is the configuration of unattended runs, but a variable exported in
    the process environment wins over the file: a person can override one setting
    for one run without editing a root-owned file. Without a file, a copy of ``base``.
    """
    merged = load_env_file(env_file) if env_file is not None else {}
    merged.update(base)
    return merged


def load_env_file(path: Path) -> dict[str, str]:
    """The variables of the environment file ``path``, checked for safety first.

    Raises :class:`EnvFileError` (a :class:`ConfigError`) when the file is not a
    regular file, is readable or writable by group or others, is owned by another
    user, is not UTF-8, or has a line that is not a ``KEY=VALUE`` assignment.
    A later assignment of the same name wins, as in a shell.
    """
    text = _read_private_file(Path(path))
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            raise EnvFileError(f"env file {path}, line {number}: {parsed}")
        if parsed is not None:
            name, value = parsed
            variables[name] = value
    return variables


def _read_private_file(path: Path) -> str:
    """Read ``path`` after checking, on the opened descriptor, that only its owner can use it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EnvFileError(f"env file {path} is not a regular file")
        euid = os.geteuid()
        if info.st_uid != euid:
            raise EnvFileError(
                f"env file {path} is owned by {_user_name(info.st_uid)}, not by {_user_name(euid)} who runs "
                f"certsmith; another user could change the secrets it holds. Run: chown {_user_name(euid)} {path}"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise EnvFileError(
                f"env file {path} has mode {mode:04o}: group or others can access the secrets it may hold. "
                f"Run: chmod 600 {path}"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise EnvFileError(f"cannot read env file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EnvFileError(f"env file {path}, line {line}: not UTF-8 text") from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _parse_line(line: str) -> tuple[str, str] | str | None:
    """``(name, value)`` for an assignment, ``None`` for a blank or comment line,
    or a message saying what is wrong (which never quotes the value)."""
    rest = line.lstrip(" \t")
    if not rest or rest.startswith("#"):
        return None
    if rest.startswith("export") and rest[6:7] in (" ", "\t"):
        rest = rest[6:].lstrip(" \t")
    name, equals, raw = rest.partition("=")
    if not equals or not (name.isascii() and name.isidentifier()):  # [A-Za-z_][A-Za-z0-9_]*
        return "expected KEY=VALUE (a name of letters, digits and _, then = without spaces around it)"
    value = _unquote(raw)
    if value is None:
        return (
            f"cannot read the value of {name}: quote a value holding spaces, and close every quote "
            "on the same line (values span one line)"
        )
    return name, value


def _unquote(raw: str) -> str | None:
    """The shell word at the start of ``raw`` with its quotes removed, or ``None``
    if it is malformed or followed by anything but blanks and a comment."""
    out: list[str] = []
    i, end = 0, len(raw)
    while i < end:
        char = raw[i]
        if char in " \t":
            trailing = raw[i:].lstrip(" \t")
            return "".join(out) if not trailing or trailing.startswith("#") else None
        if char == "'":
            close = raw.find("'", i + 1)
            if close < 0:
                return None
            out.append(raw[i + 1 : close])
            i = close + 1
        elif char == '"':
            i += 1
            while i < end and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < end and raw[i + 1] in _DOUBLE_QUOTE_ESCAPABLE:
                    i += 1
                out.append(raw[i])
                i += 1
            if i >= end:
                return None
            i += 1
        elif char == "\\":
            if i + 1 >= end:
                return None
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
