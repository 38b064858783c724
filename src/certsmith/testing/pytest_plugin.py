"""An opt-in pytest plugin: a ready ACME server for testing your own integrations offline.

Enable it in your top-level ``conftest.py``::

    pytest_plugins = ["certsmith.testing.pytest_plugin"]

and ask for ``acme_server`` in a test. It is one :class:`~certsmith.testing.pebble.PebbleServer`
for the whole session: ``directory_url`` to point a client at, ``ca_bundle`` to trust for its
TLS, ``http_port``/``tls_port`` where Pebble checks http-01/tls-alpn-01 answers, and
``challtestsrv`` (the DNS server Pebble resolves through: publish dns-01 records with
``set_txt_values``). Its log helpers show what your client sent to the CA.

By default it runs Pebble 2.10 with its single ``default`` profile (90-day certificates). Override
the session fixture ``acme_server_options`` to pass other arguments to ``PebbleServer``, such as
``{"version": "2.4"}`` or ``{"profiles": {...}}``.

The plugin is not registered as an entry point, so installing certsmith adds no fixture and
starts no server in anybody's test suite unless it is asked for as above.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from certsmith.testing.pebble import PebbleNotFound, PebbleServer

__all__ = ["acme_server", "acme_server_options"]


@pytest.fixture(scope="session")
def acme_server_options() -> Mapping[str, Any]:
    """Keyword arguments for the session's ``PebbleServer``; override it to change them."""
    return {}


@pytest.fixture(scope="session")
def acme_server(
    acme_server_options: Mapping[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PebbleServer]:
    """A running Pebble with pebble-challtestsrv on free loopback ports, shared by the session."""
    options = dict(acme_server_options)
    options.setdefault("workdir", tmp_path_factory.mktemp("acme-server"))
    server = PebbleServer(**options)
    missing: str | None = None
    try:
        server.start()
    except PebbleNotFound as exc:
        missing = str(exc)
    if missing is not None:  # failed outside the except block, so the report shows no traceback chain
        pytest.fail(f"acme_server: {missing}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
