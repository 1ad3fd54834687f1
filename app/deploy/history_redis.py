"""The message history in Redis streams, for the Redis channel layers (modern profile only).

Each service has a stream ``<CHANNELS_PREFIX>:deploy:stream:<service>``, trimmed to about
``DEPLOY_HISTORY_LENGTH`` entries (fields ``message``, ``source``, ``ts``), and an epoch key
``<CHANNELS_PREFIX>:deploy:epoch:<service>``. One Lua script appends an entry and, when the
stream does not exist yet, sets a new epoch, so a lost stream always comes back in a new epoch.

The process keeps one synchronous client (for views, commands and ``send_channel_msg``) and one
asyncio client (for the websocket consumers of its event loop), both created on first use.
"""

import asyncio
import os
import threading

import redis
import redis.asyncio

from deploy.history import (
    START,
    Entry,
    Snapshot,
    format_id,
    history_length,
    new_epoch,
    next_id,
    parse_id,
    previous_id,
)

# KEYS: stream, epoch. ARGV: max length, a new epoch, then the entry's field/value pairs.
# Returns {id, epoch}.
PUBLISH = """
local epoch = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 or not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[2], epoch)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
return {id, epoch}
"""

# KEYS: stream, epoch. ARGV: the first id to read. Returns {epoch or false, entries, whether
# entries were trimmed (1/0; false on Redis < 7, which does not count them), first id or false}.
READ = """
local epoch = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {epoch, {}, 0, false}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local fields = {}
for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
local trimmed = false
if fields['entries-added'] then
  trimmed = fields['entries-added'] > fields['length'] and 1 or 0
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
return {epoch, redis.call('XRANGE', KEYS[1], ARGV[1], '+'), trimmed, first and first[1] or false}
"""

# KEYS: stream, epoch. Returns {epoch or false, newest id or false}.
HEAD = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
return {redis.call('GET', KEYS[2]), newest and newest[1] or false}
"""


class _Client:
    """A redis-py client (sync or asyncio) with the scripts registered on it."""

    def __init__(self, client):
        self.client = client
        self.publish = client.register_script(PUBLISH)
        self.read = client.register_script(READ)
        self.head = client.register_script(HEAD)


class RedisHistory:
    """The history in the Redis at ``url``, under keys starting with ``prefix``."""

    def __init__(self, url, prefix):
        self.url = url
        self.prefix = prefix
        self._lock = threading.Lock()
        self._sync = (None, None)  # (pid, client): a forked child makes its own
        self._async = (None, None)  # (event loop, client)

    def keys(self, service):
        """``[stream key, epoch key]`` of a service."""
        return [f"{self.prefix}:deploy:stream:{service}", f"{self.prefix}:deploy:epoch:{service}"]

    def sync_client(self):
        with self._lock:
            pid, client = self._sync
            if pid != os.getpid():
                client = _Client(redis.Redis.from_url(self.url, decode_responses=True))
                self._sync = (os.getpid(), client)
            return client

    def async_client(self):
        loop = asyncio.get_running_loop()
        owner, client = self._async
        if owner is not loop:
            client = _Client(redis.asyncio.Redis.from_url(self.url, decode_responses=True))
            self._async = (loop, client)
        return client

    async def aclose(self):
        """Close the asyncio client of the running loop, if there is one."""
        owner, client = self._async
        if client is not None and owner is asyncio.get_running_loop():
            self._async = (None, None)
            await client.client.aclose()

    def close(self):
        """Close this process's synchronous client, if there is one."""
        with self._lock:
            pid, client = self._sync
            self._sync = (None, None)
        if client is not None and pid == os.getpid():
            client.client.close()

    def _publish_args(self, message, source, ts):
        return [history_length(), new_epoch(), "message", message, "source", source, "ts", ts]

    def publish_sync(self, service, message, source, ts):
        """Append a message to the service's stream; return its ``(id, epoch)``."""
        script = self.sync_client().publish
        entry_id, epoch = script(self.keys(service), self._publish_args(message, source, ts))
        return entry_id, epoch

    async def publish(self, service, message, source, ts):
        script = self.async_client().publish
        entry_id, epoch = await script(self.keys(service), self._publish_args(message, source, ts))
        return entry_id, epoch

    async def head(self, service):
        """``(epoch, newest id)`` of the service's stream; ``("", "0-0")`` when there is none."""
        epoch, newest = await self.async_client().head(self.keys(service))
        return epoch or "", newest or format_id(START)

    async def read(self, service, after):
        """A ``Snapshot`` of the entries after ``after``, an ``(ms, n)`` pair."""
        epoch, raw, trimmed, first = await self.async_client().read(
            self.keys(service), [format_id(next_id(after))]
        )
        # Entries are only ever trimmed from the front: all of them are before the first one.
        # (Without the count of entries added, Redis < 7, that may have been trimmed.)
        deleted = previous_id(parse_id(first)) if first and trimmed != 0 else START
        return Snapshot(epoch or "", [entry(*item) for item in raw], deleted)


def entry(entry_id, pairs):
    """An ``Entry`` from a stream entry as Redis returns it: id, flat field/value list."""
    fields = dict(zip(pairs[::2], pairs[1::2]))
    return Entry(entry_id, *(fields.get(name, "") for name in ("message", "source", "ts")))
