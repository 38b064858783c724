"""The Store contract, run against every store: FileStore (a directory) and RedisStore (a real redis-server).

Only what the protocol promises is checked here (records and bytes, never paths); each
store's own layout and crash safety are tested beside it (test_storage.py, test_redis_store.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from certsmith.errors import ConfigError, LockedError, StorageError
from certsmith.storage import CertificateFiles, FileStore, RenewalState, Store
from certsmith.storage.redis import RedisStore
from tests.unit.test_storage import DIRECTORY, Pair, account, files_of, key_matches_cert, make_pair, meta_for

STORE_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def pairs() -> tuple[Pair, Pair]:
    return make_pair("one.example.com"), make_pair("two.example.com")


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "file":
        yield FileStore(tmp_path / "state")
        return
    url: str = request.getfixturevalue("redis_url")
    redis_store = RedisStore.from_url(url, store_key=STORE_KEY)
    try:
        yield redis_store
    finally:
        redis_store.close()


def save(store: Store, pair: Pair, name: str = "example.com", **changes: object) -> int:
    return store.save_certificate(meta_for(pair, name, **changes), files_of(pair)).version


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


def test_account_round_trip_and_separation(store: Store, pairs: tuple[Pair, Pair]) -> None:
    other = "https://acme.example.test:14000/other-dir"
    assert store.load_account(DIRECTORY) is None
    store.save_account(account(pairs[0]))
    store.save_account(account(pairs[1], directory_url=other, url="https://x/acct/2"))
    assert store.load_account(DIRECTORY) == account(pairs[0])
    second = store.load_account(other)
    assert second is not None and second.key_pem == pairs[1].key_pem
    store.save_account(account(pairs[0], status="deactivated"))
    loaded = store.load_account(DIRECTORY)
    assert loaded is not None and loaded.status == "deactivated"


@pytest.mark.parametrize("url", ["not a url", "/relative/dir", "ftp://x/dir", "https://host:99999/dir"])
def test_bad_directory_url(store: Store, url: str) -> None:
    with pytest.raises(ConfigError):
        store.load_account(url)


def test_pending_account_key_and_archive(store: Store, pairs: tuple[Pair, Pair]) -> None:
    store.archive_account_key(DIRECTORY)  # nothing stored: nothing to do
    assert store.load_pending_account_key(DIRECTORY) is None
    store.save_account(account(pairs[0]))
    store.archive_account_key(DIRECTORY)
    store.save_pending_account_key(DIRECTORY, pairs[1].key_pem)
    assert store.load_pending_account_key(DIRECTORY) == pairs[1].key_pem
    store.save_account(account(pairs[1]))
    store.save_pending_account_key(DIRECTORY, None)
    assert store.load_pending_account_key(DIRECTORY) is None
    loaded = store.load_account(DIRECTORY)
    assert loaded is not None and loaded.key_pem == pairs[1].key_pem


def test_versions_are_numbered_by_the_store_and_kept(store: Store, pairs: tuple[Pair, Pair]) -> None:
    one, two = pairs
    assert save(store, one, created_at="2020-01-01T00:00:00Z", version=7) == 1
    assert save(store, two, created_at="") == 2
    meta = store.load_meta("example.com")
    assert meta is not None and meta.version == 2 and meta.serial == two.serial
    assert meta.created_at == "2020-01-01T00:00:00Z" and meta.updated_at > "2024"
    first, second = store.load_files("example.com", 1), store.load_files("example.com", 2)
    assert first == files_of(one) and second == files_of(two)
    assert second is not None and second.key_pem is not None and key_matches_cert(second.key_pem, second.cert_pem)
    assert store.load_files("example.com", 99) is None
    assert store.load_files("missing", 1) is None
    assert store.load_meta("missing") is None


def test_a_certificate_for_a_users_csr_stores_no_key(store: Store, pairs: tuple[Pair, Pair]) -> None:
    files = CertificateFiles(pairs[0].cert_pem, b"CHAIN", pairs[0].cert_pem + b"CHAIN", key_pem=None)
    meta = store.save_certificate(meta_for(pairs[0], key_type="csr"), files)
    assert store.load_files("example.com", meta.version) == files


def test_lineage_names_sorted(store: Store, pairs: tuple[Pair, Pair]) -> None:
    assert store.lineage_names() == []
    for name in ("b.example.com", "_.example.com", "a.example.com"):
        save(store, pairs[0], name)
    assert store.lineage_names() == ["_.example.com", "a.example.com", "b.example.com"]


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a:b", "a b", "a" * 201])
def test_invalid_lineage_names(store: Store, pairs: tuple[Pair, Pair], name: str) -> None:
    with pytest.raises(ConfigError, match="invalid certificate name"):
        store.save_certificate(meta_for(pairs[0], name), files_of(pairs[0]))
    with pytest.raises(ConfigError):
        store.load_meta(name)
    assert store.lineage_names() == []


def test_renewal_state_belongs_to_one_version(store: Store, pairs: tuple[Pair, Pair]) -> None:
    version = save(store, pairs[0])
    assert store.load_state("example.com") is None
    state = RenewalState(version=version, ari_renew_at="2025-03-01T00:00:00Z", ari_next_check="x")
    store.save_state("example.com", state)
    assert store.load_state("example.com") == state
    save(store, pairs[1])
    assert store.load_state("example.com") is None  # it described the previous certificate


def test_deploy_state_outlives_versions(store: Store, pairs: tuple[Pair, Pair]) -> None:
    save(store, pairs[0])
    assert store.load_deploy_state("example.com") == {}
    store.save_deploy_state("example.com", {"cas": {"id": 42}})
    save(store, pairs[1])
    assert store.load_deploy_state("example.com") == {"cas": {"id": 42}}


def test_delete_lineage_removes_every_version(store: Store, pairs: tuple[Pair, Pair]) -> None:
    save(store, pairs[0])
    save(store, pairs[1])
    store.save_deploy_state("example.com", {"x": {}})
    save(store, pairs[0], name="other.example.com")
    with store.lock("example.com"):
        store.delete_lineage("example.com")
    assert store.load_meta("example.com") is None
    assert store.load_files("example.com", 1) is None and store.load_files("example.com", 2) is None
    assert store.load_deploy_state("example.com") == {}
    assert store.lineage_names() == ["other.example.com"]
    store.delete_lineage("example.com")  # already gone: nothing to do
    assert save(store, pairs[1]) == 1  # a new lineage of the same name starts again


def test_journal(store: Store) -> None:
    assert store.journal_entries() == []
    store.journal_add("a1", {"kind": "dns-01", "fqdn": "x"})
    time.sleep(0.01)
    store.journal_add("b2", {"kind": "http-01", "path": "/p"})
    first, second = ("a1", {"kind": "dns-01", "fqdn": "x"}), ("b2", {"kind": "http-01", "path": "/p"})
    assert store.journal_entries() == [first, second]
    store.journal_remove("a1")
    store.journal_remove("unknown")
    assert store.journal_entries() == [second]
    with pytest.raises(ConfigError):
        store.journal_add("../x", {})


def test_lock_is_exclusive_and_released(store: Store) -> None:
    with store.lock("example.com"):
        with pytest.raises(LockedError, match=r"'example\.com'.*in use"), store.lock("example.com"):
            pytest.fail("lock acquired twice")
        with store.lock("other.example.com"):  # other names are independent
            pass
        start = time.monotonic()
        with pytest.raises(LockedError), store.lock("example.com", wait=0.3):
            pass
        assert time.monotonic() - start >= 0.3
    with pytest.raises(RuntimeError), store.lock("example.com"):
        raise RuntimeError("boom")
    with store.lock("example.com"):  # released despite the exception
        pass


def test_alock_waits_without_blocking_the_loop(store: Store) -> None:
    async def main() -> None:
        async with store.alock("example.com"):
            with pytest.raises(LockedError):
                async with store.alock("example.com"):
                    pass
        holder = store.alock("example.com")
        await holder.__aenter__()

        async def let_go() -> None:
            await asyncio.sleep(0.1)
            await holder.__aexit__(None, None, None)

        releaser = asyncio.create_task(let_go())
        async with store.alock("example.com", wait=5.0):  # only works if the loop keeps running
            pass
        await releaser

    asyncio.run(main())


def test_account_lock_is_exclusive_per_ca(store: Store) -> None:
    other = "https://other.example.test/dir"

    async def run() -> None:
        async with store.account_lock(DIRECTORY):
            with pytest.raises(LockedError, match="account for https://acme"):
                async with store.account_lock(DIRECTORY, wait=0.1):
                    pass
            async with store.account_lock(other):
                pass
        async with store.account_lock(DIRECTORY):
            pass

    asyncio.run(run())


def test_concurrent_saves_under_the_lock_number_versions_once(store: Store, pairs: tuple[Pair, Pair]) -> None:
    """Eight threads each save four versions under the lock: 32 distinct versions, each whole."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(4):
                with store.lock("example.com", wait=30):
                    save(store, pairs[i % 2])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    meta = store.load_meta("example.com")
    assert meta is not None and meta.version == 32
    for version in range(1, 33):
        files = store.load_files("example.com", version)
        assert files is not None and files.key_pem is not None and key_matches_cert(files.key_pem, files.cert_pem)


def test_damaged_records_are_storage_errors_not_crashes(store: Store, pairs: tuple[Pair, Pair]) -> None:
    """A damaged current version reads as a StorageError, and does not prevent a new version."""
    save(store, pairs[0])
    if isinstance(store, FileStore):
        (store.lineage_dir("example.com") / "meta.json").write_bytes(b"{broken")
    else:
        assert isinstance(store, RedisStore)
        store._client.hset(store._lineage_key("example.com"), "meta", b"{broken")
    with pytest.raises(StorageError, match=r"not valid JSON|invalid"):
        store.load_meta("example.com")
    assert save(store, pairs[1]) == 2
    meta = store.load_meta("example.com")
    assert meta is not None and meta.serial == pairs[1].serial


# -- the shared rate limiter and shared http-01 answers (issue 11, items 3 and 4) ------------

from certsmith.storage.base import RateBucket  # noqa: E402


def test_rate_take_counts_a_sliding_window(store: Store) -> None:
    bucket = RateBucket("orders:acct", 3, 10.0)
    assert [store.rate_take([bucket], 100.0 + i) for i in range(3)] == [None, None, None]
    refused = store.rate_take([bucket], 105.0)
    assert refused is not None and refused.bucket == bucket
    assert refused.wait == pytest.approx(5.0)  # the token taken at 100 frees at 110
    assert store.rate_take([bucket], 109.99) is not None
    assert store.rate_take([bucket], 110.0) is None  # ... and is taken again at once
    again = store.rate_take([bucket], 110.5)
    assert again is not None and again.wait == pytest.approx(0.5)  # the one of 101 frees at 111


def test_rate_take_is_all_or_nothing_and_names_the_bucket_that_frees_last(store: Store) -> None:
    orders, domain, other = RateBucket("o", 2, 10.0), RateBucket("d", 1, 100.0), RateBucket("x", 5, 10.0)
    assert store.rate_take([orders, domain], 0.0) is None
    refused = store.rate_take([other, orders, domain], 1.0)
    assert refused is not None and refused.bucket == domain and refused.wait == pytest.approx(99.0)
    # nothing was taken from the buckets that had room: "o" still has its second token, "x" all five
    assert store.rate_take([orders], 2.0) is None
    assert store.rate_take([orders], 3.0) is not None
    for i in range(5):
        assert store.rate_take([other], 4.0 + i) is None


def test_a_long_window_is_kept_while_other_buckets_are_asked(store: Store) -> None:
    """A bucket with a month's window still counts after other calls, more than a week later, pruned the rest."""
    day = 86400.0
    monthly, daily = RateBucket("m", 1, 30 * day), RateBucket("o", 5, day)
    assert store.rate_take([monthly], 0.0) is None
    assert store.rate_take([daily], 8 * day) is None  # a call that never names "m"
    assert store.rate_take([daily], 9 * day) is None
    refused = store.rate_take([monthly], 10 * day)
    assert refused is not None and refused.wait == pytest.approx(20 * day)


def test_rate_take_can_check_without_taking(store: Store) -> None:
    bucket = RateBucket("d", 1, 60.0)
    peek = RateBucket("d", 1, 60.0, take=False)
    assert store.rate_take([peek], 0.0) is None
    assert store.rate_take([peek], 1.0) is None  # a check takes nothing
    assert store.rate_take([bucket], 2.0) is None
    refused = store.rate_take([peek], 3.0)
    assert refused is not None and refused.wait == pytest.approx(59.0)


def test_rate_take_with_a_zero_limit_refuses_for_a_window(store: Store) -> None:
    refused = store.rate_take([RateBucket("none", 0, 30.0)], 0.0)
    assert refused is not None and refused.wait == pytest.approx(30.0)
    assert store.rate_take([], 0.0) is None


def test_rate_take_counts_across_processes(store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two processes sharing the store take 10 tokens each at once from a bucket of 5: 5 in all."""
    import json
    import subprocess
    import sys

    if isinstance(store, FileStore):
        opener = f"from certsmith.storage import FileStore; s = FileStore(Path({str(store.root)!r}))"
    else:
        url = request.getfixturevalue("redis_url")
        opener = f"from certsmith.storage.redis import RedisStore; s = RedisStore.from_url({url!r})"
    script = (
        "import json, time\nfrom pathlib import Path\n"
        "from certsmith.storage.base import RateBucket\n"
        f"{opener}\n"
        "b = RateBucket('shared', 5, 60.0)\n"
        "ok = [s.rate_take([b], time.time()) is None for _ in range(10)]\n"
        "print(json.dumps(sum(ok)))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    granted = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(granted) == 5, granted
    assert store.rate_take([RateBucket("shared", 5, 60.0)], time.time()) is not None


def test_challenge_answers_publish_lookup_withdraw(store: Store) -> None:
    assert store.challenge_lookup("tok-1_A") is None
    store.challenge_publish("tok-1_A", "tok-1_A.thumb", 60.0)
    store.challenge_publish("tok2", "tok2.thumb", 60.0)
    assert store.challenge_lookup("tok-1_A") == "tok-1_A.thumb"
    store.challenge_withdraw("tok-1_A")
    store.challenge_withdraw("tok-1_A")  # no error when gone
    assert store.challenge_lookup("tok-1_A") is None
    assert store.challenge_lookup("tok2") == "tok2.thumb"


def test_challenge_answers_expire(store: Store) -> None:
    store.challenge_publish("short", "short.thumb", 1.5)
    assert store.challenge_lookup("short") == "short.thumb"
    deadline = time.monotonic() + 10
    while store.challenge_lookup("short") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.challenge_lookup("short") is None


@pytest.mark.parametrize("token", ["", "../x", "a/b", "a.b", "x" * 257, "tök"])
def test_challenge_tokens_are_checked(store: Store, token: str) -> None:
    for call in (
        lambda: store.challenge_publish(token, "v", 60.0),
        lambda: store.challenge_lookup(token),
        lambda: store.challenge_withdraw(token),
    ):
        with pytest.raises(ConfigError, match="invalid http-01 token"):
            call()

# -- inventory and migration (certsmith store migrate / check) -------------------------


def _damage_version_meta(store: Store, name: str, version: int) -> None:
    if isinstance(store, FileStore):
        (store.lineage_dir(name) / "archive" / str(version) / "meta.json").write_bytes(b"{broken")
    else:
        assert isinstance(store, RedisStore)
        store._client.hset(store._version_key(name, version), "meta", b"{broken")


def test_accounts_are_listed_with_their_archived_keys(store: Store, pairs: tuple[Pair, Pair]) -> None:
    other = "https://other.example.test/dir"
    assert store.account_urls() == [] and store.archived_account_keys(DIRECTORY) == []
    store.save_account(account(pairs[0]))
    store.save_account(account(pairs[1], directory_url=other, url="https://x/acct/2"))
    assert store.account_urls() == [DIRECTORY, other]
    store.archive_account_key(DIRECTORY)
    archived = store.archived_account_keys(DIRECTORY)
    assert [key for _, key in archived] == [pairs[0].key_pem] and archived[0][0] > "2024"
    assert store.archived_account_keys(other) == []


def test_import_account_keeps_archived_keys_exactly(store: Store, pairs: tuple[Pair, Pair]) -> None:
    keys = [("20200101T000000Z", pairs[0].key_pem), ("20200101T000000Z-1", pairs[1].key_pem)]
    store.import_account(account(pairs[1]), keys)
    assert store.load_account(DIRECTORY) == account(pairs[1])
    assert store.archived_account_keys(DIRECTORY) == keys
    store.import_account(account(pairs[0]), keys[:1])  # replaces the archive, not appends to it
    assert store.archived_account_keys(DIRECTORY) == keys[:1]
    for bad in ("../x", "", "a b", ".hidden"):
        with pytest.raises(StorageError, match="invalid archived account key stamp"):
            store.import_account(account(pairs[1]), [(bad, pairs[1].key_pem)])
    assert store.load_account(DIRECTORY) == account(pairs[0]) and store.archived_account_keys(DIRECTORY) == keys[:1]


def test_versions_are_listed_and_loaded_as_stored(store: Store, pairs: tuple[Pair, Pair]) -> None:
    assert store.lineage_versions("example.com") == [] and store.load_version("example.com", 1) is None
    save(store, pairs[0])
    save(store, pairs[1])
    assert store.lineage_versions("example.com") == [1, 2]
    loaded = store.load_version("example.com", 1)
    assert loaded is not None and loaded[1] == files_of(pairs[0]) and loaded[0].serial == pairs[0].serial
    current = store.load_meta("example.com")
    assert store.load_version("example.com", 2) == (current, files_of(pairs[1]))
    assert store.load_version("example.com", 3) is None


def test_import_version_writes_exactly_what_it_is_given(store: Store, pairs: tuple[Pair, Pair]) -> None:
    stamps = {"created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-02-02T00:00:00Z"}
    one = meta_for(pairs[0], "copy.example.com", version=3, **stamps)
    two = meta_for(pairs[1], "copy.example.com", version=7, **stamps)
    store.import_version(one, files_of(pairs[0]), current=True)
    store.import_version(two, files_of(pairs[1]), current=False)
    assert store.load_meta("copy.example.com") == one  # not re-stamped, not renumbered; 7 is not current
    assert store.lineage_names() == ["copy.example.com"]
    assert store.lineage_versions("copy.example.com") == [3, 7]
    assert store.load_version("copy.example.com", 7) == (two, files_of(pairs[1]))
    assert store.load_files("copy.example.com", 3) == files_of(pairs[0])
    with pytest.raises(StorageError, match="exists already"):
        store.import_version(replace(two, serial="ff"), files_of(pairs[0]), current=True)
    assert store.load_version("copy.example.com", 7) == (two, files_of(pairs[1]))
    assert store.load_meta("copy.example.com") == one
    store.import_version(two, files_of(pairs[1]), current=False)  # the same version again: nothing changes
    assert store.load_meta("copy.example.com") == one and store.lineage_versions("copy.example.com") == [3, 7]
    store.import_version(two, files_of(pairs[1]), current=True)  # ... and with current, it is committed
    assert store.load_meta("copy.example.com") == two and store.load_files("copy.example.com", 7) == files_of(pairs[1])
    store.import_version(one, files_of(pairs[0]), current=True)
    csr = replace(one, version=8, key_type="csr")
    csr_files = CertificateFiles(pairs[0].cert_pem, b"CHAIN", pairs[0].cert_pem + b"CHAIN", key_pem=None)
    store.import_version(csr, csr_files, current=True)
    assert store.load_meta("copy.example.com") == csr and store.load_files("copy.example.com", 8) == csr_files
    assert save(store, pairs[0], "copy.example.com") == 9  # the store's own numbering goes on from there


def test_audit_finds_nothing_in_a_sound_store_and_a_damaged_version(store: Store, pairs: tuple[Pair, Pair]) -> None:
    store.save_account(account(pairs[0]))
    save(store, pairs[0])
    save(store, pairs[1])
    store.save_state("example.com", RenewalState(version=2))
    store.save_deploy_state("example.com", {"x": {}})
    store.journal_add("a1", {"kind": "dns-01"})
    assert store.audit() == []
    _damage_version_meta(store, "example.com", 1)
    with pytest.raises(StorageError):
        store.load_version("example.com", 1)
    problems = store.audit()
    assert [p.kind for p in problems] == ["damaged"] and "1" in problems[0].where
    assert problems[0].to_json()["detail"]
