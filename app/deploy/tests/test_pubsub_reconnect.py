"""The pub/sub layer after Redis closed its idle subscription connection, against a redis-server
of its own.

channels-redis' pub/sub layer keeps one subscription connection per process and reads it only
while a consumer of the process is subscribed. When Redis closes it in between (a restart, a
failover: the cluster's checks found it after their failovers), the next ``SUBSCRIBE`` writes to a
closed connection. With redis-py's default (no retry) that fails the next consumer of every ASGI
process (the websocket handshake answers 500): the ``default`` case, which must fail. With
``devops.env.pubsub_layer_pool_options`` the command reconnects and runs again.
"""

import asyncio
import uuid

import pytest
import redis
from channels_redis.pubsub import RedisPubSubChannelLayer

from deploy.tests.helpers import modern_only
from deploy.tests.test_core_layer import redis_url  # noqa: F401 - the fixture: a redis-server
from devops.env import channel_layers

pytestmark = [modern_only, pytest.mark.live]


async def idle_subscription(layer):
    """A consumer came and went: the layer's subscription connection is open and unread."""
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.1)
    receiving.cancel()  # what channels does when a consumer leaves: the layer unsubscribes
    with pytest.raises(asyncio.CancelledError):
        await receiving


@pytest.mark.parametrize(
    "options",
    [
        "fixed",
        pytest.param(
            "default",
            marks=pytest.mark.xfail(
                strict=True, raises=redis.ConnectionError, reason="SUBSCRIBE on a closed connection"
            ),
        ),
    ],
)
async def test_a_consumer_subscribes_after_redis_closed_the_idle_subscription(redis_url, options):  # noqa: F811
    prefix = f"reconnect-{uuid.uuid4().hex[:8]}"
    if options == "fixed":
        layers = channel_layers("redis-pubsub", redis_url, 600, 100, prefix=prefix)
        config = layers["default"]["CONFIG"]
    else:
        config = {"hosts": [redis_url], "prefix": prefix}
    layer = RedisPubSubChannelLayer(**config)
    try:
        await idle_subscription(layer)
        admin = redis.Redis.from_url(redis_url)
        # Every connection of the layer: with no channel subscribed Redis counts it as a normal one.
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        admin.close()
        await asyncio.sleep(0.2)
        channel = await layer.new_channel()  # the next websocket's consumer
        await layer.group_add("builds", channel)
        await layer.group_send("builds", {"type": "build.result", "ok": True})
        message = await asyncio.wait_for(layer.receive(channel), 5)
        assert message == {"type": "build.result", "ok": True}
    finally:
        await layer.flush()
