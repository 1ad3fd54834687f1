"""The app over Redis Sentinel: a master, a replica and a sentinel of their own on 127.0.0.1.

The history's clients follow a failover (``SENTINEL FAILOVER``, and a master that dies), pushes
wait for ``DEPLOY_HISTORY_REPLICAS`` acknowledgements, and both channel layers reach the master
through the sentinel. Skipped when redis-server is not installed (unless REQUIRE_LIVE=1).
"""

import asyncio
import io
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from deploy import history
from deploy.push import send_channel_msg
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import free_port, needs_history
from devops.env import channel_layers, sentinel_host

pytestmark = [needs_history, pytest.mark.live]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MASTER = "devops"
DATA_PASSWORD = "data/pass@word"
SENTINEL_PASSWORD = "sentinel-pass"
#: Seconds a failover may take (the sentinel's down-after is 1 s).
FAILOVER_TIMEOUT = 30


def wait_for(condition, what, timeout=FAILOVER_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Topology:
    """A master and a replica (redis-server) monitored by one sentinel (quorum 1)."""

    def __init__(self, directory):
        import redis

        self.redis = redis
        self.directory = directory
        self.processes = {}
        self.ports = {name: free_port() for name in ("a", "b", "sentinel")}
        self.start_node("a")
        self.start_node("b", replica_of=self.ports["a"])
        wait_for(lambda: self.node("a").info("replication")["connected_slaves"] == 1, "replica")
        wait_for(lambda: self.node("b").info("replication")["master_link_status"] == "up", "sync")
        self.start_sentinel()
        wait_for(self.replica_is_ready, "the sentinel to see b")

    def replica_is_ready(self):
        [replica] = self.sentinel().sentinel_slaves(MASTER)
        return replica["flags"] == "slave" and replica["master-link-status"] == "ok"

    def master_is_ready(self, name):
        """Whether the sentinel names ``name`` as a master in good state (as redis-py checks)."""
        state = self.sentinel().sentinel_masters()[MASTER]
        return (
            self.master() == name
            and state["is_master"]
            and not (state["is_sdown"] or state["is_odown"])
            and self.node(name).info("replication")["role"] == "master"
        )

    def start_node(self, name, replica_of=None):
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.ports[name])]
        args += ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        args += ["--dbfilename", f"{name}.rdb"]
        if replica_of:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.spawn(name, args)
        wait_for(lambda: self.node(name).ping(), f"redis-server {name}", timeout=10)

    def start_sentinel(self):
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.ports['sentinel']}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['a']} 1\n"
            f"sentinel auth-pass {MASTER} {DATA_PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        self.spawn("sentinel", [REDIS_SERVER, str(config), "--sentinel"])
        wait_for(lambda: self.sentinel().ping(), "the sentinel", timeout=10)

    def spawn(self, name, args):
        with open(self.directory / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def node(self, name):
        port = self.ports[name]
        return self.redis.Redis(port=port, password=DATA_PASSWORD, decode_responses=True)

    def sentinel(self):
        port = self.ports["sentinel"]
        return self.redis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True)

    def master(self):
        """The name of the node the sentinel names as master."""
        _, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER)
        return next(name for name, number in self.ports.items() if number == int(port))

    def host(self):
        """channels-redis' sentinel host of this topology (what ``Env.redis`` returns)."""
        sentinels = [("127.0.0.1", self.ports["sentinel"])]
        return sentinel_host(sentinels, MASTER, SENTINEL_PASSWORD, DATA_PASSWORD, 0)

    def failover(self):
        """Make the replica the master; return once the old master serves as its replica."""
        old = self.master()
        new = "b" if old == "a" else "a"

        def start_failover():
            try:
                return self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
            except self.redis.ResponseError as error:
                if "NOGOODSLAVE" not in str(error):  # the sentinel has not polled b yet
                    raise
                return False

        wait_for(start_failover, "the sentinel to accept the failover")
        wait_for(lambda: self.master() == new, "the sentinel to switch the master")
        wait_for(lambda: self.node(old).info("replication")["role"] == "slave", "the demotion")
        return old, new

    def stop(self, name):
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self):
        for name in list(self.processes):
            self.stop(name)


def start_topology(directory):
    if not os.access(REDIS_SERVER, os.X_OK):
        if os.environ.get("REQUIRE_LIVE") == "1":
            pytest.fail(f"REQUIRE_LIVE=1 but {REDIS_SERVER} is not installed")
        pytest.skip(f"{REDIS_SERVER} is not installed")
    return Topology(directory)


@pytest.fixture
def topology(tmp_path):
    """A fresh topology for a test that fails over."""
    topology = start_topology(tmp_path)
    try:
        yield topology
    finally:
        topology.close()


@pytest.fixture(scope="module")
def stable(tmp_path_factory):
    """One topology for the tests that leave it as it is (each uses keys of its own)."""
    topology = start_topology(tmp_path_factory.mktemp("sentinel"))
    try:
        yield topology
    finally:
        topology.close()


def make_backend(topology):
    from deploy.history_redis import RedisHistory

    return RedisHistory(topology.host(), f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def backend(topology):
    backend = make_backend(topology)
    yield backend
    backend.close()


@pytest.fixture
def stable_backend(stable):
    backend = make_backend(stable)
    yield backend
    backend.close()


def stream_ids(topology, node, backend, service="tasks"):
    return [entry_id for entry_id, _ in topology.node(node).xrange(backend.keys(service)[0])]


def publish(backend, message):
    return backend.publish_sync("tasks", message, "push", "2026-01-02T03:04:05+00:00")


async def test_history_clients_follow_a_failover(topology, backend):
    """The cached sync and asyncio clients write to the new master after a failover."""
    first = publish(backend, "before")
    before = await backend.publish("tasks", "before, async", "client", "ts")
    assert stream_ids(topology, "a", backend) == [first.id, before.id]
    old, new = await asyncio.to_thread(topology.failover)
    assert (old, new) == ("a", "b")
    after = await asyncio.to_thread(publish, backend, "after")
    after_async = await backend.publish("tasks", "after, async", "client", "ts")
    # Same stream, same epoch, one chain of prev ids, all on the new master.
    assert {after.epoch, after_async.epoch} == {first.epoch}
    assert (after.prev, after_async.prev) == (before.id, after.id)
    assert stream_ids(topology, "b", backend) == [first.id, before.id, after.id, after_async.id]
    snapshot = await backend.read("tasks", history.START)
    assert [entry.message for entry in snapshot.entries][-2:] == ["after", "after, async"]
    await backend.aclose()


def test_history_follows_a_dead_master(topology, backend):
    first = publish(backend, "before")
    topology.stop("a")
    wait_for(lambda: topology.master_is_ready("b"), "the sentinel to fail over")
    after = publish(backend, "after")
    assert (after.epoch, after.prev) == (first.epoch, first.id)
    assert stream_ids(topology, "b", backend) == [first.id, after.id]


def test_replicas_acknowledge_the_entry(stable, stable_backend, settings):
    settings.DEPLOY_HISTORY_REPLICAS = 1
    published = publish(stable_backend, "replicated")
    assert stream_ids(stable, "b", stable_backend) == [published.id]


async def test_too_few_replicas_fail_the_publish(stable_backend, settings):
    from deploy.history_redis import NotReplicated

    settings.DEPLOY_HISTORY_REPLICAS = 2
    settings.DEPLOY_HISTORY_WAIT_MS = 200
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="reached 1 of the 2 replicas"):
        publish(stable_backend, "lost?")
    assert time.monotonic() - started < 2
    with pytest.raises(NotReplicated):
        await stable_backend.publish("tasks", "lost?", "client", "ts")
    await stable_backend.aclose()


@pytest.fixture
def sentinel_layer(stable, settings):
    """The app's settings over the topology: pub/sub layer and history through the sentinel."""
    settings.CHANNEL_LAYERS = channel_layers("redis-pubsub", stable.host(), 600, 50)
    settings.CHANNELS_PREFIX = f"test-{uuid.uuid4().hex[:8]}"
    settings.DEPLOY_PUSH_TOKEN = "token"
    yield stable
    history.get_history().close()


def test_too_few_replicas_fail_every_push(sentinel_layer, settings, client):
    settings.DEPLOY_HISTORY_REPLICAS = 2
    settings.DEPLOY_HISTORY_WAIT_MS = 100
    from deploy.history_redis import NotReplicated

    with pytest.raises(NotReplicated):
        send_channel_msg("tasks", "not acknowledged")
    with pytest.raises(CommandError) as excinfo:
        call_command("push", "tasks", "not acknowledged", stdout=io.StringIO())
    assert excinfo.value.returncode == 1
    response = client.post(
        "/api/push/tasks/", "hi", content_type="text/plain", HTTP_AUTHORIZATION="Bearer token"
    )
    assert response.status_code == 503
    settings.DEPLOY_HISTORY_REPLICAS = 1
    response = client.post(
        "/api/push/tasks/", "hi", content_type="text/plain", HTTP_AUTHORIZATION="Bearer token"
    )
    assert response.status_code == 202


@pytest.mark.parametrize("kind", ["redis", "redis-pubsub"])
async def test_websocket_over_sentinel(stable, settings, connect, kind):
    """Both layers through the sentinel: a pushed message reaches a websocket."""
    settings.CHANNEL_LAYERS = channel_layers(kind, stable.host(), 600, 50)
    settings.CHANNELS_PREFIX = f"test-{uuid.uuid4().hex[:8]}"
    client = await connect("tasks")
    await sync_to_async(send_channel_msg)("tasks", "through the sentinel")
    frame = await client.receive_json_from(timeout=TIMEOUT)
    assert (frame["message"], frame["prev"]) == ("through the sentinel", "0-0")
    history.get_history().close()
    await history.get_history().aclose()


async def test_websocket_misses_nothing_across_a_failover(topology, settings, connect):
    """The master dies: what the pub/sub layer drops while it resubscribes comes from the stream."""
    settings.CHANNEL_LAYERS = channel_layers("redis-pubsub", topology.host(), 600, 50)
    settings.CHANNELS_PREFIX = f"test-{uuid.uuid4().hex[:8]}"
    client = await connect("tasks")
    push = sync_to_async(send_channel_msg)
    await push("tasks", "before")
    frames = [await client.receive_json_from(timeout=TIMEOUT)]
    await asyncio.to_thread(topology.stop, "a")
    await asyncio.to_thread(wait_for, lambda: topology.master_is_ready("b"), "the failover")
    for n in range(3):
        await push("tasks", f"after {n}")
    await asyncio.sleep(2.5)  # the layer's receiver retries every second
    await push("tasks", "final")
    while frames[-1]["message"] != "final":
        frames.append(await client.receive_json_from(timeout=FAILOVER_TIMEOUT))
    assert [f["message"] for f in frames] == ["before", "after 0", "after 1", "after 2", "final"]
    assert [f["seq"] for f in frames] == [1, 2, 3, 4, 5]
    history.get_history().close()
    await history.get_history().aclose()


@pytest.mark.parametrize("timeouts", [True, False], ids=["sentinel timeouts", "without them"])
async def test_a_silent_sentinel_does_not_hang_the_lookup_of_the_master(stable, timeouts):
    """A sentinel cut off (its host paused: connections open, no answer) is first in the list: the
    lookup moves on to the next sentinel after ``SENTINEL_TIMEOUT``; without a timeout it hangs."""
    from deploy.history_redis import RedisHistory

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel's backlog; nothing ever answers
        host = stable.host()
        host["sentinels"] = [silent.getsockname(), *host["sentinels"]]
        if not timeouts:
            host["sentinel_kwargs"] = {"password": SENTINEL_PASSWORD}
        backend = RedisHistory(host, f"test-{uuid.uuid4().hex[:8]}")
        publish = backend.publish("tasks", "through the second sentinel", "push", "ts")
        if timeouts:
            published = await asyncio.wait_for(publish, 5)
            assert published.prev == "0-0"
        else:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(publish, 5)
        await backend.aclose()
