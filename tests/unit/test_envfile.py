"""Environment files: parsing, the safety checks on the file, and the merge with the process environment."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from certsmith.envfile import EnvFileError, default_env_file, environment_with, load_env_file
from certsmith.errors import ConfigError

SECRET = "s3cr3t-VALUE-xyz"


def write_env(tmp_path: Path, text: str | bytes, mode: int = 0o600, name: str = "env") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(mode)
    return path


def test_assignments_comments_blank_lines_and_export(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "   INDENTED=1\n"
        "export\tTABBED=2\n"
        "EMPTY=\n"
        "WITH_EQUALS=a=b==c\n"
        "TRAILING=word   # a comment after the value\n"
        "HASH_INSIDE=a#b\n"
        "STARTS_WITH_HASH=#x\n",
    )
    assert load_env_file(path) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "INDENTED": "1",
        "TABBED": "2",
        "EMPTY": "",
        "WITH_EQUALS": "a=b==c",
        "TRAILING": "word",
        "HASH_INSIDE": "a#b",
        "STARTS_WITH_HASH": "#x",
    }


def test_quoting_is_unquoted_like_a_shell_without_expansion(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "SINGLE='a b $HOME \\n \"x\" # not a comment'\n"
        'DOUBLE="a b \\"q\\" \\\\ \\$HOME \\` \\n $HOME"\n'
        "CONCAT=one'two three'\"four\"\n"
        "ESCAPED=a\\ b\n"
        "EMPTY_QUOTES=''\n"
        "QUOTED_THEN_COMMENT='x y'  # fine\n"
        "CRLF=value\r\n",
    )
    assert load_env_file(path) == {
        "SINGLE": 'a b $HOME \\n "x" # not a comment',
        "DOUBLE": 'a b "q" \\ $HOME ` \\n $HOME',
        "CONCAT": "onetwo threefour",
        "ESCAPED": "a b",
        "EMPTY_QUOTES": "",
        "QUOTED_THEN_COMMENT": "x y",
        "CRLF": "value",
    }


def test_a_later_assignment_wins(tmp_path: Path) -> None:
    assert load_env_file(write_env(tmp_path, "A=1\nA=2\n")) == {"A": "2"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (SECRET, "expected KEY=VALUE"),
        (f"KEY = {SECRET}", "expected KEY=VALUE"),
        (f"1KEY={SECRET}", "expected KEY=VALUE"),
        (f"KEY-NAME={SECRET}", "expected KEY=VALUE"),
        (f"export {SECRET}", "expected KEY=VALUE"),
        (f"KEY={SECRET} more", "value of KEY"),
        (f"KEY='{SECRET}", "value of KEY"),
        (f'KEY="{SECRET}', "value of KEY"),
        (f"KEY='{SECRET}'trailing garbage", "value of KEY"),
        (f"KEY={SECRET}\\", "value of KEY"),
    ],
)
def test_a_bad_line_names_file_and_line_never_the_value(tmp_path: Path, line: str, expected: str) -> None:
    path = write_env(tmp_path, f"# header\nGOOD=1\n\n{line}\nLATER=2\n")
    with pytest.raises(EnvFileError) as info:
        load_env_file(path)
    message = str(info.value)
    assert f"env file {path}, line 4: " in message
    assert expected in message
    assert SECRET not in message
    assert isinstance(info.value, ConfigError)


def test_text_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write_env(tmp_path, b"A=1\nB=\xff\xfe\n")
    with pytest.raises(EnvFileError, match=r"line 2: not UTF-8"):
        load_env_file(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o611])
def test_a_file_open_to_group_or_others_is_refused_with_the_chmod_to_run(tmp_path: Path, mode: int) -> None:
    path = write_env(tmp_path, f"KEY={SECRET}\n", mode=mode)
    with pytest.raises(EnvFileError) as info:
        load_env_file(path)
    message = str(info.value)
    assert f"has mode {mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert SECRET not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_is_accepted(tmp_path: Path, mode: int) -> None:
    assert load_env_file(write_env(tmp_path, "KEY=1\n", mode=mode)) == {"KEY": "1"}


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    path = write_env(tmp_path, f"KEY={SECRET}\n")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(EnvFileError) as info:
        load_env_file(path)
    message = str(info.value)
    assert "owned by nobody, not by root" in message
    assert f"chown root {path}" in message
    assert SECRET not in message


def test_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(EnvFileError, match="is not a regular file"):
        load_env_file(directory)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(EnvFileError, match="is not a regular file"):  # and does not block on the FIFO
        load_env_file(fifo)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match=r"cannot read env file .*missing: No such file"):
        load_env_file(tmp_path / "missing")


def test_an_exported_variable_wins_over_the_file(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FROM_FILE=file\nBOTH=file\n")
    merged = environment_with(path, {"BOTH": "process", "ONLY_PROCESS": "p"})
    assert merged == {"FROM_FILE": "file", "BOTH": "process", "ONLY_PROCESS": "p"}


def test_without_a_file_the_environment_is_copied(tmp_path: Path) -> None:
    base = {"A": "1"}
    merged = environment_with(None, base)
    assert merged == base
    merged["B"] = "2"
    assert base == {"A": "1"}


def test_environment_with_checks_the_file(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="chmod 600"):
        environment_with(write_env(tmp_path, "A=1\n", mode=0o644), {})


def test_the_default_file_is_for_root_and_only_when_it_exists(tmp_path: Path) -> None:
    system_file = tmp_path / "env"
    assert default_env_file(euid=0, system_file=system_file) is None
    system_file.write_text("A=1\n")
    assert default_env_file(euid=0, system_file=system_file) == system_file
    assert default_env_file(euid=1000, system_file=system_file) is None
