"""The Redis backend of the message history against a redis-server of its own.

Skipped when redis-server is not installed (unless REQUIRE_LIVE=1, as in test_live.py).
"""

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from deploy import history
from deploy.history import EPOCH_CHANGED, GAP
from deploy.tests.helpers import free_port, needs_history, redis_server

pytestmark = needs_history


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """URL of a redis-server started for this module on a free loopback port, stopped after."""
    with redis_server(tmp_path_factory.mktemp("history-redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def backend(redis_url):
    from deploy.history_redis import RedisHistory

    backend = RedisHistory(redis_url, f"test-{uuid.uuid4().hex[:8]}")
    yield backend
    backend.close()


@pytest.fixture
def raw(redis_url):
    """A plain redis-py client of the same server."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def publish(backend, service, message):
    return backend.publish_sync(service, message, "push", "2026-01-02T03:04:05+00:00")


def test_keys_are_under_the_prefix(backend, raw):
    entry_id, epoch, prev = publish(backend, "tasks", "hello")
    assert prev == "0-0"
    stream, epoch_key = backend.keys("tasks")
    assert (stream, epoch_key) == (
        f"{backend.prefix}:deploy:stream:tasks",
        f"{backend.prefix}:deploy:epoch:tasks",
    )
    assert raw.get(epoch_key) == epoch
    [(stored_id, fields)] = raw.xrange(stream)
    assert stored_id == entry_id
    assert fields == {
        "message": "hello",
        "source": "push",
        "ts": "2026-01-02T03:04:05+00:00",
        "prev": "0-0",
    }


def test_epoch_stays_across_publishes(backend):
    published = [publish(backend, "tasks", f"message {n}") for n in range(5)]
    assert len({epoch for _, epoch, _ in published}) == 1
    ids = [history.parse_id(entry_id) for entry_id, _, _ in published]
    assert ids == sorted(ids) and len(set(ids)) == 5
    # Each entry names the one before it.
    assert [prev for _, _, prev in published] == ["0-0"] + [p.id for p in published[:-1]]


def test_lost_stream_comes_back_in_a_new_epoch(backend, raw):
    _, before, _ = publish(backend, "tasks", "one")
    raw.delete(backend.keys("tasks")[0])  # the stream only: its epoch key stays
    _, after, prev = publish(backend, "tasks", "two")
    assert prev == "0-0"
    assert after != before
    assert raw.get(backend.keys("tasks")[1]) == after


def test_stream_is_trimmed_to_about_the_length(backend, raw, settings):
    settings.DEPLOY_HISTORY_LENGTH = 10
    first, _, _ = publish(backend, "tasks", "first")
    for n in range(299):
        publish(backend, "tasks", f"message {n}")
    length = raw.xlen(backend.keys("tasks")[0])
    assert 10 <= length < 300  # MAXLEN ~ trims whole nodes of entries


async def test_trimmed_position_resumes_with_a_gap(backend, settings):
    settings.DEPLOY_HISTORY_LENGTH = 10
    first, epoch, _ = publish(backend, "tasks", "first")
    for n in range(299):
        publish(backend, "tasks", f"message {n}")
    try:
        missed = await history.resume(backend, "tasks", history.parse_id(first), epoch)
        snapshot = await backend.read("tasks", history.START)
    finally:
        await backend.aclose()
    assert (missed.outcome, missed.reason) == (history.GAP, history.TRIMMED)
    assert missed.entries == snapshot.entries
    assert missed.entries[-1].message == "message 298"
    assert snapshot.deleted >= history.parse_id(first)


async def test_head_read_and_resume(backend):
    try:
        assert await backend.head("tasks") == ("", "0-0")
        assert await backend.read("tasks", history.START) == ("", [], history.START)
        ids = [publish(backend, "tasks", f"message {n}")[0] for n in range(3)]
        epoch = (await backend.head("tasks"))[0]
        assert await backend.head("tasks") == (epoch, ids[-1])
        entry_id, same_epoch, prev = await backend.publish("tasks", "async", "client", "ts")
        assert (same_epoch, prev) == (epoch, ids[-1])
        missed = await history.resume(backend, "tasks", history.parse_id(ids[0]), epoch)
        assert [(e.id, e.message) for e in missed.entries] == [
            (ids[1], "message 1"),
            (ids[2], "message 2"),
            (entry_id, "async"),
        ]
        assert missed.outcome == history.RESUMED
        other = await history.resume(backend, "tasks", history.parse_id(ids[2]), "other")
        assert (other.outcome, other.reason, len(other.entries)) == (GAP, EPOCH_CHANGED, 4)
        # A client that saw the service empty: nothing was trimmed, so it missed nothing for good.
        fresh = await history.resume(backend, "tasks", history.START, "")
        assert (fresh.outcome, len(fresh.entries)) == (history.RESUMED, 4)
    finally:
        await backend.aclose()


def test_concurrent_publishes_share_one_epoch_and_unique_ids(backend, raw):
    """Publishers racing on a new stream: the script makes exactly one of them set the epoch."""

    def publish_many(worker):
        return [publish(backend, "tasks", f"{worker}-{n}") for n in range(50)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [item for batch in pool.map(publish_many, range(8)) for item in batch]
    assert len({epoch for _, epoch, _ in results}) == 1
    assert len({entry_id for entry_id, _, _ in results}) == 400
    # The prev links make one chain through every entry, whatever the publishers' interleaving.
    ids = sorted((entry_id for entry_id, _, _ in results), key=history.parse_id)
    assert sorted(prev for _, _, prev in results) == sorted(["0-0"] + ids[:-1])
    assert raw.xlen(backend.keys("tasks")[0]) == 400
    assert raw.get(backend.keys("tasks")[1]) == results[0][1]


async def test_async_client_is_reused_within_a_loop(backend):
    try:
        assert backend.async_client() is backend.async_client()
        await asyncio.gather(*(backend.publish("tasks", str(n), "client", "ts") for n in range(20)))
        assert len((await backend.read("tasks", history.START)).entries) == 20
    finally:
        await backend.aclose()


def test_unreachable_redis_raises(settings):
    from deploy.history_redis import RedisHistory

    backend = RedisHistory(f"redis://127.0.0.1:{free_port()}/0", "asgi")
    import redis

    with pytest.raises(redis.ConnectionError):
        publish(backend, "tasks", "lost")
    backend.close()


async def test_between_reads_what_live_events_missed(backend):
    published = [publish(backend, "tasks", f"message {n}") for n in range(5)]
    ids = [p.id for p in published]
    try:
        epoch, found = await backend.between(
            "tasks", history.parse_id(ids[0]), history.parse_id(ids[3])
        )
        assert epoch == published[0].epoch
        assert [(e.id, e.message, e.prev) for e in found] == [
            (ids[1], "message 1", ids[0]),
            (ids[2], "message 2", ids[1]),
        ]
        empty = await backend.between("tasks", history.parse_id(ids[1]), history.parse_id(ids[2]))
        assert empty == (epoch, [])
        assert await backend.between("other", history.START, (1, 0)) == ("", [])
    finally:
        await backend.aclose()


@pytest.mark.parametrize("twice", [True, False], ids=["read twice", "once"])
async def test_reads_survive_connections_closed_by_the_server(backend, raw, monkeypatch, twice):
    """After Redis restarted (here: its clients killed) the pool's connections are closed; a read
    that gets one is sent again on a new connection. Read once, some of them fail (in molecule:
    websocket handshakes failed with HTTP 500 after the restart of redis-server)."""
    from deploy import history_redis

    if not twice:
        monkeypatch.setattr(history_redis, "read_twice", lambda script, *args: script(*args))
    await asyncio.gather(*(backend.head("tasks") for _ in range(20)))  # 20 pooled connections
    errors = 0
    for _ in range(3):
        raw.client_kill_filter(_type="normal", skipme=True)
        for _ in range(20):
            try:
                await backend.head("tasks")
            except Exception:  # noqa: BLE001 - counted
                errors += 1
    assert errors == 0 if twice else errors > 0
    await backend.aclose()


def test_a_sentinel_layer_gives_the_history_its_login_not_its_pool_options(settings):
    # The history logs in as the layer does: as the project's Redis user, not as default.
    host = {
        "sentinels": [("redis1", 26379)],
        "master_name": "devops",
        "sentinel_kwargs": {"password": "sentinel", "retry": object()},
        "username": "project",
        "password": "secret",
        "db": 2,
        "retry_on_error": [ConnectionError],
    }
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "x", "CONFIG": {"hosts": [host]}}}
    assert history.layer_redis() == {
        "sentinels": [("redis1", 26379)],
        "master_name": "devops",
        "sentinel_kwargs": {"password": "sentinel"},
        "username": "project",
        "password": "secret",
        "db": 2,
    }
