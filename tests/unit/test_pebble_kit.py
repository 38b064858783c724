"""Finding Pebble's programs and describing its profiles (no server started)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from certsmith.testing.pebble import PebbleNotFound, PebbleProfile, find_pebble, pebble_cache_dir


def test_the_cache_directory_defaults_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CERTSMITH_PEBBLE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pebble_cache_dir() == tmp_path / ".cache" / "certsmith" / "pebble-2.10.1"


def test_pebble_210_is_found_in_the_configured_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for program in ("pebble", "pebble-challtestsrv"):
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", str(tmp_path))
    found = find_pebble("2.10")
    assert (found.version, found.pebble, found.challtestsrv) == (
        "2.10", tmp_path / "pebble", tmp_path / "pebble-challtestsrv"
    )


def test_a_missing_pebble_210_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pebble").write_text("#!/bin/sh\n")
    (tmp_path / "pebble").chmod(0o755)
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", str(tmp_path))
    with pytest.raises(PebbleNotFound) as caught:
        find_pebble("2.10")
    message = str(caught.value)
    assert f"{tmp_path}/pebble-challtestsrv missing" in message and f"{tmp_path}/pebble " not in message
    assert "scripts/bootstrap.sh" in message
    assert f"GOBIN={tmp_path} go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1" in message


def test_pebble_24_is_debians(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", str(tmp_path))  # never consulted for 2.4
    found = find_pebble("2.4")
    assert (found.pebble, found.challtestsrv) == (Path("/usr/bin/pebble"), Path("/usr/bin/pebble-challtestsrv"))


def test_an_unknown_version_is_refused() -> None:
    version: Any = "2.5"  # outside PebbleVersion, as an untyped caller could pass
    with pytest.raises(ValueError, match=r"unknown Pebble version '2\.5'; use '2\.10' or '2\.4'"):
        find_pebble(version)


def test_a_profile_is_written_in_whole_seconds() -> None:
    profile = PebbleProfile("six days and a bit", datetime.timedelta(hours=160, milliseconds=500))
    assert profile.to_config() == {"description": "six days and a bit", "validityPeriod": 576000}


@pytest.mark.parametrize("validity", [datetime.timedelta(0), datetime.timedelta(seconds=-5)])
def test_a_profile_needs_a_positive_validity(validity: datetime.timedelta) -> None:
    # Pebble would silently read 0 as its 90-day default
    with pytest.raises(ValueError, match="at least one second"):
        PebbleProfile("broken", validity)
