"""A capacity for the queues of channels-redis' pub/sub layer, in every ASGI process of the release.

channels-redis' core layer keeps each channel's messages in Redis, at most ``capacity`` of them (``CHANNELS_CAPACITY``);
its pub/sub layer (``channels_redis.pubsub``, ``CHANNEL_LAYER=redis-pubsub``) hands each message to an in-process
``asyncio.Queue`` without a bound. A consumer that cannot keep up (its client reads slowly, and the server's sends to
it wait) then makes its process hold every message published to its groups. ``bound_pubsub_queues`` gives those
queues the core layer's behaviour: at most ``capacity`` messages wait, the next ones are dropped (the bundled app
sends what its client missed from its history when the messages go on).
"""

import asyncio
import logging

logger = logging.getLogger(__name__)


class DroppingQueue(asyncio.Queue):
    """A channel's queue that drops what is put into it while full, as the core layer does on a full channel."""

    def __init__(self, channel, capacity):
        super().__init__(maxsize=capacity)
        self.channel, self.dropped = channel, 0

    def put_nowait(self, item):
        if self.full():
            if not self.dropped:
                logger.warning("channel %s is full (%d messages): dropping messages", self.channel, self.maxsize)
            self.dropped += 1
            return
        super().put_nowait(item)


class BoundedQueues(dict):
    """The pub/sub layer's ``channels`` (channel name -> queue): each new queue it creates is given a capacity."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, channel, queue):
        if type(queue) is asyncio.Queue and queue.empty():
            queue = DroppingQueue(channel, self.capacity)
        super().__setitem__(channel, queue)


def bound_pubsub_queues(capacity):
    """Give every queue channels-redis' pub/sub layer creates from now on ``capacity``; returns whether the installed
    channels-redis has the layer (3.3 and later: the legacy profiles' has none)."""
    try:
        from channels_redis import pubsub
    except ImportError:
        return False
    layer = getattr(pubsub, "RedisPubSubLoopLayer", None)
    if layer is None:
        return False
    if getattr(layer, "devops_capacity", None) is None:
        init = layer.__init__

        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.channels = BoundedQueues(layer.devops_capacity)

        layer.__init__ = __init__
    layer.devops_capacity = capacity
    return True
