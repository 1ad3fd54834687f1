"""devops_toolkit.layers against a redis-server of its own: a consumer that does not receive makes channels-redis'
pub/sub layer queue everything published to its group (the unprotected case); with the capacity its queue holds
`capacity` messages, drops the rest, and takes messages again once the consumer caught up."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "roles" / "app" / "files"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PUBLISHED, CAPACITY = 300, 50

# One process per case: the capacity applies to the whole process, as in an ASGI server.
SCRIPT = """
import asyncio, json, sys
from channels_redis.pubsub import RedisPubSubChannelLayer
from devops_toolkit import layers

url, capacity, published = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if capacity:
    assert layers.bound_pubsub_queues(capacity)

async def main():
    receiver, sender = RedisPubSubChannelLayer(hosts=[url]), RedisPubSubChannelLayer(hosts=[url])
    channel = await receiver.new_channel()
    await receiver.group_add("builds", channel)
    for number in range(published):
        await sender.group_send("builds", {"type": "build.result", "number": number, "log": "x" * 1000})
    queue = receiver._get_layer().channels[channel]
    for _ in range(50):  # until the publications stop arriving
        size = queue.qsize()
        await asyncio.sleep(0.1)
        if size and queue.qsize() == size:
            break
    queued = queue.qsize()
    numbers = [(await receiver.receive(channel))["number"] for _ in range(queued)]
    await sender.group_send("builds", {"type": "build.result", "number": published})
    numbers.append((await asyncio.wait_for(receiver.receive(channel), 10))["number"])
    print(json.dumps({"queued": queued, "numbers": numbers, "dropped": getattr(queue, "dropped", 0)}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if not os.access(REDIS_SERVER, os.X_OK):
        if os.environ.get("REQUIRE_LIVE") == "1":
            pytest.fail(f"REQUIRE_LIVE=1 but {REDIS_SERVER} is not installed")
        pytest.skip(f"{REDIS_SERVER} is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(data)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def publish(redis_url, capacity):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url, str(capacity), str(PUBLISHED)],
        env={**os.environ, "PYTHONPATH": str(FILES)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_without_a_capacity_the_pubsub_layer_queues_everything_for_a_consumer_that_does_not_receive(redis_url):
    result, _ = publish(redis_url, 0)
    assert result["queued"] == PUBLISHED
    assert result["numbers"] == list(range(PUBLISHED + 1))


def test_with_a_capacity_the_queue_holds_that_many_drops_the_rest_and_takes_messages_again(redis_url):
    result, log = publish(redis_url, CAPACITY)
    print(f"\n{PUBLISHED} published to a consumer that did not receive: {result['queued']} queued, "
          f"{result['dropped']} dropped")  # fmt: skip
    assert result["queued"] == CAPACITY
    assert result["dropped"] == PUBLISHED - CAPACITY
    # The oldest were kept (the consumer goes on where it was), and the next one after catching up arrives.
    assert result["numbers"] == [*range(CAPACITY), PUBLISHED]
    assert log.count(f"is full ({CAPACITY} messages): dropping messages") == 1, log
