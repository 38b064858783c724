"""What RedisStore promises beyond the Store contract: sealed private keys, leases with fencing, failures.

Real redis-server (the session fixture), real processes for crashes and stalls.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from certsmith.errors import ConfigError, LeaseLostError, LockedError, StorageError, StoreKeyMissing
from certsmith.storage import open_store
from certsmith.storage.redis import RedisStore, load_store_key
from tests.support.redis_server import RedisServer
from tests.unit.test_storage import DIRECTORY, Pair, account, files_of, key_matches_cert, make_pair, meta_for

KEY = os.urandom(32)
KEY_TEXT = base64.b64encode(KEY).decode()
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def pairs() -> tuple[Pair, Pair]:
    return make_pair("one.example.com"), make_pair("two.example.com")


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url, store_key=KEY)
    try:
        yield opened
    finally:
        opened.close()


def raw_values(url: str) -> dict[str, bytes]:
    """Every value in Redis, whatever its type, joined per key."""
    client = redis.Redis.from_url(url)
    out: dict[str, bytes] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            out[key.decode()] = client.get(key) or b""
        elif kind == b"hash":
            out[key.decode()] = b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"list":
            out[key.decode()] = b"".join(client.lrange(key, 0, -1))
        elif kind in (b"set", b"zset"):
            out[key.decode()] = b" ".join(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
    return out


# -- the store key ------------------------------------------------------------------------


def test_store_key_from_env_and_file(tmp_path: Path) -> None:
    assert load_store_key({}) is None
    assert load_store_key({"CERTSMITH_STORE_KEY": KEY_TEXT}) == KEY
    assert load_store_key({"CERTSMITH_STORE_KEY": base64.urlsafe_b64encode(KEY).decode()}) == KEY
    path = tmp_path / "key"
    path.write_text(KEY_TEXT + "\n")
    assert load_store_key({"CERTSMITH_STORE_KEY_FILE": str(path)}) == KEY


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"CERTSMITH_STORE_KEY": "c2hvcnQ="}, "CERTSMITH_STORE_KEY is not a usable store key.*openssl rand -base64 32"),
        ({"CERTSMITH_STORE_KEY": "not base64 at all!"}, "not a usable store key"),
        ({"CERTSMITH_STORE_KEY": KEY_TEXT, "CERTSMITH_STORE_KEY_FILE": "/x"}, "not both"),
        ({"CERTSMITH_STORE_KEY_FILE": "/nonexistent/key"}, "cannot read the store key file /nonexistent/key"),
    ],
)
def test_bad_store_keys_are_one_clear_error(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_store_key(env)
    assert KEY_TEXT not in str(info.value)


def test_private_keys_are_sealed_at_rest(store: RedisStore, redis_url: str, pairs: tuple[Pair, Pair]) -> None:
    store.save_account(account(pairs[0]))
    store.archive_account_key(DIRECTORY)
    store.save_pending_account_key(DIRECTORY, pairs[1].key_pem)
    store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    values = raw_values(redis_url)
    assert any(pairs[0].cert_pem in v for v in values.values())  # the check can see what is there
    for key, value in values.items():
        assert b"PRIVATE KEY" not in value, key
        assert pairs[0].key_pem not in value and pairs[1].key_pem not in value
    assert all(key.startswith("certsmith:") for key in values)
    loaded = store.load_account(DIRECTORY)
    assert loaded is not None and loaded.key_pem == pairs[0].key_pem
    assert store.archived_account_keys(DIRECTORY)[0][1] == pairs[0].key_pem


def test_without_a_key_private_keys_are_refused_and_nothing_is_written(
    redis_url: str, pairs: tuple[Pair, Pair]
) -> None:
    keyless = RedisStore.from_url(redis_url)
    with pytest.raises(StoreKeyMissing, match=r"no store key is set.*openssl rand"):
        keyless.save_account(account(pairs[0]))
    with pytest.raises(StoreKeyMissing):
        keyless.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    assert raw_values(redis_url) == {}
    # A certificate without a private key (the user's CSR) needs no key.
    files = files_of(pairs[0])
    keyless.save_certificate(meta_for(pairs[0], key_type="csr"), type(files)(files.cert_pem, b"C", b"F", None))
    assert keyless.lineage_names() == ["example.com"]


def test_insecure_keys_are_stored_plain_when_asked(redis_url: str, pairs: tuple[Pair, Pair]) -> None:
    insecure = RedisStore.from_url(redis_url, insecure_keys=True)
    insecure.save_account(account(pairs[0]))
    assert any(b"PRIVATE KEY" in v for v in raw_values(redis_url).values())
    assert insecure.load_account(DIRECTORY) == account(pairs[0])
    # With a store key, a plain key (planted, or written before the key existed) is not taken silently.
    keyed = RedisStore.from_url(redis_url, store_key=KEY)
    with pytest.raises(StorageError, match="not encrypted although a store key is set; allow unencrypted keys"):
        keyed.load_account(DIRECTORY)
    both = RedisStore.from_url(redis_url, store_key=KEY, insecure_keys=True)
    assert both.load_account(DIRECTORY) == account(pairs[0])


def test_a_sealed_key_cannot_be_read_without_or_with_a_wrong_key(
    store: RedisStore, redis_url: str, pairs: tuple[Pair, Pair]
) -> None:
    store.save_account(account(pairs[0]))
    store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    before = raw_values(redis_url)
    with pytest.raises(StoreKeyMissing, match="encrypted and no store key is set"):
        RedisStore.from_url(redis_url).load_account(DIRECTORY)
    wrong = RedisStore.from_url(redis_url, store_key=os.urandom(32))
    for attempt in (
        lambda: wrong.load_account(DIRECTORY),
        lambda: wrong.load_files("example.com", 1),
        lambda: wrong.save_account(account(pairs[1])),
        lambda: wrong.save_certificate(meta_for(pairs[1]), files_of(pairs[1])),
    ):
        with pytest.raises(StorageError, match=r"is not the one the private keys in redis://.* were encrypted with"):
            attempt()
    assert raw_values(redis_url) == before  # the wrong key wrote nothing
    # The public parts stay readable without any key: list and show work.
    meta = RedisStore.from_url(redis_url).load_meta("example.com")
    assert meta is not None and meta.version == 1


def test_a_sealed_key_moved_to_another_version_is_detected(store: RedisStore, pairs: tuple[Pair, Pair]) -> None:
    store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    store.save_certificate(meta_for(pairs[1]), files_of(pairs[1]))
    client = store._client
    sealed_one = client.hget(store._version_key("example.com", 1), "key")
    client.hset(store._version_key("example.com", 2), "key", sealed_one)
    with pytest.raises(StorageError, match="cannot be decrypted: it was damaged or moved"):
        store.load_files("example.com", 2)


# -- URLs and the factory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://:hunter2@127.0.0.1:99999/0", r"invalid port"),
        ("redis:///0", "names no host"),
        ("redis://127.0.0.1:6379/x", "database must be a number"),
        ("redis://127.0.0.1:6379/0?bogus=1", "unknown option"),
        ("redis://127.0.0.1:6379/0?lease=0.1", "between 1 and 3600"),
        ("redis://127.0.0.1:6379/0?prefix=a%20b", "invalid Redis key prefix"),
        ("memcached://127.0.0.1", "unknown kind of store"),
    ],
)
def test_bad_store_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        open_store(url, env={})
    assert "hunter2" not in str(info.value)


def test_ca_bundle_only_for_rediss(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        open_store("redis://127.0.0.1:1/0", env={}, ca_bundle=str(tmp_path / "ca.pem"))
    with pytest.raises(ConfigError, match="not a readable file"):
        open_store("rediss://127.0.0.1:1/0", env={}, ca_bundle=str(tmp_path / "ca.pem"))


def test_the_prefix_separates_installations(redis_url: str, pairs: tuple[Pair, Pair]) -> None:
    one = open_store(redis_url + "?prefix=one", env={"CERTSMITH_STORE_KEY": KEY_TEXT})
    two = open_store(redis_url + "?prefix=two", env={"CERTSMITH_STORE_KEY": KEY_TEXT})
    one.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    assert one.lineage_names() == ["example.com"] and two.lineage_names() == []
    assert all(key.startswith("one:") for key in raw_values(redis_url))


# -- Redis going away ---------------------------------------------------------------------------


def test_redis_down_is_one_clear_error_and_nothing_half_written(
    redis_server: RedisServer, redis_url: str, pairs: tuple[Pair, Pair]
) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisStore(client, where=redis_url, store_key=KEY)
    store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    before = raw_values(redis_url)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # a stalled or partitioned server
    try:
        with pytest.raises(StorageError, match=r"^cannot save certificate 'example\.com': the Redis store .* "
                           "is unreachable .*nothing was changed$") as info:
            store.save_certificate(meta_for(pairs[1]), files_of(pairs[1]))
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert raw_values(redis_url) == before  # the old version whole, no trace of the new one
    reader = RedisStore.from_url(redis_url, store_key=KEY)
    meta = reader.load_meta("example.com")
    assert meta is not None and meta.version == 1 and meta.serial == pairs[0].serial
    redis_server.stop()  # gone altogether
    with pytest.raises(StorageError, match=r"is unreachable .*Connection refused"):
        reader.lineage_names()


# -- leases -----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import base64, json, sys
    from pathlib import Path
    from certsmith.storage import CertificateFiles, LineageMeta
    from certsmith.storage.redis import RedisStore

    store = RedisStore.from_url(sys.argv[1], store_key=base64.b64decode(sys.argv[2]))
    pair = json.loads(Path(sys.argv[3]).read_text())
    with store.lock("example.com"):
        print("locked", store.fence("example.com"), flush=True)
        sys.stdin.readline()  # the test stops or kills us here
        meta = LineageMeta.from_json({**json.loads(Path(sys.argv[4]).read_text()), "serial": "stalled"})
        files = CertificateFiles(pair["cert"].encode(), b"C", b"F", pair["key"].encode())
        try:
            store.save_certificate(meta, files)
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
            sys.exit(3)
        print("saved", flush=True)
    """
)


@pytest.fixture
def holder_args(tmp_path: Path, pairs: tuple[Pair, Pair], redis_url: str) -> list[str]:
    pair_file = tmp_path / "pair.json"
    pair_file.write_text(json.dumps({"key": pairs[1].key_pem.decode(), "cert": pairs[1].cert_pem.decode()}))
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps(meta_for(pairs[1]).to_json()))
    return [sys.executable, "-c", HOLDER, redis_url + "?lease=1", KEY_TEXT, str(pair_file), str(meta_file)]


def start_holder(args: list[str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": SRC})
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("locked "), line
    return child


def test_a_killed_holders_lease_expires(holder_args: list[str], redis_url: str) -> None:
    store = RedisStore.from_url(redis_url + "?lease=1", store_key=KEY)
    child = start_holder(holder_args)
    try:
        time.sleep(1.5)  # past one lease: the holder's renewals keep it
        busy = rf"in use by another certsmith process \(pid {child.pid} on "
        with pytest.raises(LockedError, match=busy), store.lock("example.com"):
            pass
        child.kill()
        child.wait()
        start = time.monotonic()
        with store.lock("example.com", wait=5):
            waited = time.monotonic() - start
            assert store.fence("example.com") == 2
        assert waited < 2.5  # freed by expiry, within about one lease
    finally:
        child.kill()
        child.wait()


def test_a_stalled_holder_cannot_overwrite_newer_work(
    holder_args: list[str], redis_url: str, pairs: tuple[Pair, Pair]
) -> None:
    store = RedisStore.from_url(redis_url + "?lease=1", store_key=KEY)
    child = start_holder(holder_args)
    try:
        os.kill(child.pid, signal.SIGSTOP)  # its renewal thread stops too
        with store.lock("example.com", wait=5):  # taken once the stalled lease expired
            assert store.fence("example.com") == 2
            newer = store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
        os.kill(child.pid, signal.SIGCONT)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        out = child.stdout.readline()
        assert child.wait(timeout=10) == 3
    finally:
        os.kill(child.pid, signal.SIGCONT) if child.poll() is None else None
        child.kill()
        child.wait()
    assert out.startswith("LeaseLostError cannot save certificate 'example.com': this process's lease on it expired")
    assert "another process has taken it since (fencing number 2 > 1)" in out
    meta = store.load_meta("example.com")
    assert meta == newer and meta.serial == pairs[0].serial and meta.version == 1
    assert store.load_files("example.com", 2) is None


def test_writes_under_a_lease_check_the_fence_atomically(store: RedisStore, pairs: tuple[Pair, Pair]) -> None:
    """The fence is checked by every write under the lease: state, deploy state, deletion, account."""
    with store.lock("example.com"):
        store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
        store._client.incr(store._k("fence", "example.com"))  # as when another process took the lease
        for write in (
            lambda: store.save_certificate(meta_for(pairs[1]), files_of(pairs[1])),
            lambda: store.save_state("example.com", store.load_state("example.com") or _state()),
            lambda: store.save_deploy_state("example.com", {"x": {}}),
            lambda: store.delete_lineage("example.com"),
        ):
            with pytest.raises(LeaseLostError, match="nothing was written"):
                write()
    meta = store.load_meta("example.com")
    assert meta is not None and meta.version == 1 and store.load_deploy_state("example.com") == {}
    files = store.load_files("example.com", 1)
    assert files is not None and files.key_pem is not None and key_matches_cert(files.key_pem, files.cert_pem)


def _state() -> object:
    from certsmith.storage import RenewalState

    return RenewalState(version=1)


def test_a_lease_is_renewed_while_held(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url + "?lease=1", store_key=KEY)
    other = RedisStore.from_url(redis_url + "?lease=1", store_key=KEY)
    with store.lock("example.com"):
        time.sleep(2.2)  # two leases long
        with pytest.raises(LockedError), other.lock("example.com"):
            pass
        assert store._client.pttl(store._k("lock", "example.com")) > 0
    assert store._client.exists(store._k("lock", "example.com")) == 0  # released by its holder


# -- writes outside a lease, and the directory cache (fleet operations) ------------------------


def test_a_renewal_state_for_a_replaced_version_does_not_overwrite_the_current_one(
    store: RedisStore, pairs: tuple[Pair, Pair]
) -> None:
    from certsmith.storage.base import RenewalState

    store.save_certificate(meta_for(pairs[0]), files_of(pairs[0]))
    store.save_certificate(meta_for(pairs[1]), files_of(pairs[1]))  # another host renewed: version 2
    store.save_state("example.com", RenewalState(version=2, ari_renew_at="2030-01-01T00:00:00Z"))
    # A renewal check that began on version 1 finishes late: its answer is dropped.
    store.save_state("example.com", RenewalState(version=1, ari_renew_at="2020-01-01T00:00:00Z"))
    assert store.load_state("example.com") == RenewalState(version=2, ari_renew_at="2030-01-01T00:00:00Z")


def test_the_directory_cache_is_shared_and_never_fails(store: RedisStore, redis_server: RedisServer) -> None:
    url = "https://acme.example/directory"
    cache = store.directory_cache(max_age=60)
    assert cache.get(url) is None
    cache.put(url, {"newOrder": "https://acme.example/new-order"})
    other = RedisStore(store._client, store_key=KEY).directory_cache()
    assert other.get(url) == {"newOrder": "https://acme.example/new-order"}
    assert 0 < store._client.pttl(cache._key(url)) <= 60_000  # expires by itself
    assert cache.get("https://other.example/directory") is None
    store._client.set(cache._key(url), b"{damaged")
    assert cache.get(url) is None
    cache.drop(url)
    assert store._client.exists(cache._key(url)) == 0
    redis_server.stop()
    assert cache.get(url) is None  # Redis gone: a miss, not an error
    cache.put(url, {})
    cache.drop(url)
