"""Processes racing on one state directory, and a state directory that cannot be written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CERTSMITH, Cli, clean_env


def test_ten_first_runs_at_once_register_one_account(cli: Cli) -> None:
    mark = cli.pebble.log_mark()
    processes = [
        subprocess.Popen(
            [*CERTSMITH, *cli.global_args(), "issue", "-d", f"race{i}.example.com", "--email", "a@example.com",
             "--agree-tos", "--challenge", "tls-alpn-01", "--tls-port", str(cli.pebble.tls_port)],
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(10)
    ]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in processes]
    for process in processes:
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    # one tls-alpn-01 port: the processes take turns for it, or fail clearly when it is busy
    assert cli.pebble.accounts_created(mark) == 1, results
    accounts = list(cli.state_dir.rglob("account.json"))
    assert len(accounts) == 1
    issued = [i for i in range(10) if (cli.state_dir / "certificates" / f"race{i}.example.com").exists()]
    assert issued, results
    for status, stderr in results:
        assert "Traceback" not in stderr and (status == 0 or "in use" in stderr), stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_state_directory_sends_nothing(cli: Cli) -> None:
    cli.state_dir.mkdir(parents=True)
    cli.state_dir.chmod(0o500)
    try:
        mark = cli.pebble.log_mark()
        result = cli.run("account", "register", "--email", "a@example.com", "--agree-tos", check=False)
        assert result.returncode == 1 and "cannot write" in result.stderr
        assert cli.pebble.request_count("newAccount", mark) == 0
    finally:
        cli.state_dir.chmod(0o700)


def test_a_state_directory_on_a_read_only_path_sends_nothing(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory's parent should be")
    readonly = Cli(cli.pebble, blocker / "state")
    mark = cli.pebble.log_mark()
    result = readonly.run("account", "register", "--email", "a@example.com", "--agree-tos", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert cli.pebble.request_count("newAccount", mark) == 0


def test_a_locked_lineage_is_refused_or_waited_for(registered_cli: Cli) -> None:
    import threading

    from certsmith.storage.files import FileStore

    cli = registered_cli
    store = FileStore(cli.state_dir)
    with store.lock("locked.example.com"):
        refused = cli.run("issue", "-d", "locked.example.com", *cli.http_args(), check=False)
    assert refused.returncode == 1 and "in use by another certsmith process" in refused.stderr
    assert "--wait SECONDS" in refused.stderr

    held = threading.Event()

    def hold_for_a_second() -> None:
        with store.lock("locked.example.com"):
            held.set()
            threading.Event().wait(1.0)

    holder = threading.Thread(target=hold_for_a_second)
    holder.start()
    held.wait(5)
    waited = cli.run("issue", "-d", "locked.example.com", "--wait", "30", *cli.http_args())
    holder.join()
    assert waited.returncode == 0
    assert (cli.state_dir / "certificates" / "locked.example.com" / "fullchain.pem").exists()


@pytest.mark.parametrize("ca_has_the_new_key", [True, False])
def test_an_interrupted_key_rollover_is_finished_by_the_next_run(registered_cli: Cli, ca_has_the_new_key: bool) -> None:
    import asyncio

    from certsmith.acme.client import AcmeClient
    from certsmith.crypto import generate_key, load_private_key, private_key_pem
    from certsmith.storage.files import FileStore

    cli = registered_cli
    store = FileStore(cli.state_dir)
    directory_url = cli.pebble.directory_url
    stored = store.load_account(directory_url)
    assert stored is not None
    new_key = generate_key("ec256")
    store.save_pending_account_key(directory_url, private_key_pem(new_key))  # staged, then the process died...

    async def change_key_at_the_ca() -> None:  # ...after (or before) the CA switched to the new key
        old = load_private_key(stored.key_pem)
        async with AcmeClient(directory_url, old, account_url=stored.url, ca_bundle=cli.pebble.ca_bundle) as client:
            await client.change_key(new_key)

    if ca_has_the_new_key:
        asyncio.run(change_key_at_the_ca())
    result = cli.run("issue", "-d", f"rollover-{ca_has_the_new_key}.example.com".lower(), *cli.http_args())
    assert ("interrupted key rollover" in result.stderr) is ca_has_the_new_key
    now = store.load_account(directory_url)
    assert now is not None and now.url == stored.url
    assert (now.key_pem == private_key_pem(new_key)) is ca_has_the_new_key
    assert store.load_pending_account_key(directory_url) is None
