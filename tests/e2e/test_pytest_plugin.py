"""The opt-in pytest plugin, run as a user's own test suite would run it (through pytester)."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from certsmith.testing.pebble import pebble_cache_dir

pytest_plugins = ["pytester"]

# pytester gives the inner runs their own HOME, so point them at the real cache
PEBBLE_DIR = str(pebble_cache_dir())

USER_TESTS = '''
import certsmith
from certsmith import ChallengeSettings

seen = []


def test_issue_against_the_acme_server(acme_server, tmp_path):
    result = certsmith.issue(
        ["user.example.com"],
        state_dir=tmp_path / "state",
        directory=acme_server.directory_url,
        ca_bundle=acme_server.ca_bundle,
        email=["user@example.com"],
        agree_tos=True,
        challenge=ChallengeSettings(http_port=acme_server.http_port),
    )
    assert result.names == ("user.example.com",)
    assert len(acme_server.orders_created()) == 1
    seen.append(acme_server.directory_url)


def test_the_server_is_shared_by_the_session(acme_server):
    assert seen == [acme_server.directory_url]
'''


def test_the_plugin_gives_one_ready_acme_server_per_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", PEBBLE_DIR)
    pytester.makeconftest('pytest_plugins = ["certsmith.testing.pytest_plugin"]')
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_acme_server_options_choose_the_server(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", PEBBLE_DIR)
    pytester.makeconftest(
        textwrap.dedent(
            """
            import datetime
            import pytest
            from certsmith.testing.pebble import PebbleProfile

            pytest_plugins = ["certsmith.testing.pytest_plugin"]

            @pytest.fixture(scope="session")
            def acme_server_options():
                return {"profiles": {"brief": PebbleProfile("two hours", datetime.timedelta(hours=2))}}
            """
        )
    )
    pytester.makepyfile(
        test_options="""
        def test_profiles(acme_server):
            assert acme_server.directory()["meta"]["profiles"] == {"brief": "two hours"}
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_missing_pebble_fails_with_how_to_install_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest('pytest_plugins = ["certsmith.testing.pytest_plugin"]')
    pytester.makepyfile(test_user="def test_needs_server(acme_server):\n    pass\n")
    empty = pytester.mkdir("no-pebble-here")
    monkeypatch.setenv("CERTSMITH_PEBBLE_DIR", str(empty))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*acme_server: Pebble 2.10 is not installed*go install*"])
    result.stdout.no_fnmatch_line("*During handling*")


def test_the_plugin_is_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_needs_server(acme_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'acme_server' not found*"])
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert not [ep for ep in entry_points if ep.value.startswith("certsmith")]
