"""The message history in Redis streams, for the Redis channel layers (modern profile only).

Each service has a stream ``<CHANNELS_PREFIX>:deploy:stream:<service>``, trimmed to about
``DEPLOY_HISTORY_LENGTH`` entries (fields ``message``, ``source``, ``ts``), and an epoch key
``<CHANNELS_PREFIX>:deploy:epoch:<service>``. One Lua script appends an entry and, when the
stream does not exist yet, sets a new epoch, so a lost stream always comes back in a new epoch.

The script also returns the id of the stream's previous entry (``prev``, ``"0-0"`` when there
is none) and stores it with the entry: a consumer that sees a ``prev`` it has not delivered knows
it missed live events (the pub/sub layer drops what is published around a failover,
channels_redis #256) and fetches them from the stream (``between``).

Redis is a URL, or a Sentinel-monitored master (``{"sentinels", "master_name",
"sentinel_kwargs", "username", "password", "db"}``, channels-redis' sentinel host): the clients
then come from redis-py's ``Sentinel.master_for``, whose connections ask the sentinels for the
master each time they connect, so that after a failover (a connection error, or READONLY from the
demoted master) the next command goes to the new master. Nothing here remembers a master's address.

With ``DEPLOY_HISTORY_REPLICAS`` > 0 every publish is followed, on the same connection, by
``WAIT <replicas> <DEPLOY_HISTORY_WAIT_MS>``; fewer acknowledgements raise ``NotReplicated``, so
the push is not acknowledged.

The process keeps one synchronous client (for views, commands and ``send_channel_msg``) and one
asyncio client (for the websocket consumers of its event loop), both created on first use.
"""

import asyncio
import os
import threading

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings

from deploy.history import (
    START,
    Entry,
    Published,
    Snapshot,
    format_id,
    history_length,
    new_epoch,
    next_id,
    parse_id,
    previous_id,
)
from devops import compat

# KEYS: stream, epoch. ARGV: max length, a new epoch, then the entry's field/value pairs.
# Returns {id, epoch, id of the entry before it or "0-0"}; the entry also gets a field "prev".
PUBLISH = """
local epoch = redis.call('GET', KEYS[2])
local prev = '0-0'
if redis.call('EXISTS', KEYS[1]) == 0 or not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[2], epoch)
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then prev = newest[1] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'prev', prev, unpack(ARGV, 3))
return {id, epoch, prev}
"""

# KEYS: stream, epoch. ARGV: first and last id to read. Returns {epoch or false, entries}.
BETWEEN = """
return {redis.call('GET', KEYS[2]), redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])}
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


async def read_twice(script, *args):
    """Run a read-only script, once more when its pooled connection turns out closed.

    redis-py's pools made by ``from_url`` and ``master_for`` do not retry: after Redis restarted
    or failed over, each connection the pool held failed one command (every websocket handshake
    that got one failed with HTTP 500). A read is safe to repeat; a publish is not (it may have
    been written before the connection broke), so publishes fail and the caller retries.
    """
    try:
        return await script(*args)
    except redis.ConnectionError:
        return await script(*args)


class _Client:
    """A redis-py client (sync or asyncio) with the scripts registered on it."""

    def __init__(self, client):
        self.client = client
        self.publish = client.register_script(PUBLISH)
        self.read = client.register_script(READ)
        self.head = client.register_script(HEAD)
        self.between = client.register_script(BETWEEN)


class NotReplicated(redis.RedisError):
    """Fewer replicas than ``DEPLOY_HISTORY_REPLICAS`` acknowledged an entry in time."""


def replicas():
    """Replicas that must acknowledge each entry (``DEPLOY_HISTORY_REPLICAS``)."""
    return getattr(settings, "DEPLOY_HISTORY_REPLICAS", 0)


def wait_ms():
    """Milliseconds a publish waits for them (``DEPLOY_HISTORY_WAIT_MS``)."""
    return getattr(settings, "DEPLOY_HISTORY_WAIT_MS", 1000)


def client_options():
    """Connection options of both clients: pool size, and a read timeout longer than a WAIT but
    short enough that a push to a master cut off fails in seconds (the next one reconnects through
    the sentinels to the master that replaced it)."""
    return {
        "decode_responses": True,
        "max_connections": getattr(settings, "CHANNELS_REDIS_MAX_CONNECTIONS", 1000),
        "socket_timeout": 2 + wait_ms() / 1000,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
    }


def make_client(where, asyncio_client):
    """A redis-py client of ``where``: a URL, or a sentinel host dict (its master)."""
    options = client_options()
    if isinstance(where, str):
        module = redis.asyncio if asyncio_client else redis
        return module.Redis.from_url(where, **options)
    module = redis.asyncio.sentinel if asyncio_client else redis.sentinel
    sentinel = module.Sentinel(
        [tuple(address) for address in where["sentinels"]],
        sentinel_kwargs=compat.sentinel_kwargs(where, asyncio_client),
    )
    return sentinel.master_for(
        where["master_name"],
        username=where.get("username"),
        password=where.get("password"),
        db=where.get("db", 0),
        **options,
    )


def check_replicated(entry_id, acknowledged, wanted):
    if acknowledged < wanted:
        raise NotReplicated(
            f"history entry {entry_id} reached {acknowledged} of the {wanted} replicas"
            f" DEPLOY_HISTORY_REPLICAS asks for within {wait_ms()} ms: not acknowledged"
        )


class RedisHistory:
    """The history in the Redis at ``where``, under keys starting with ``prefix``.

    ``where`` is a URL or a sentinel host dict (see the module's docstring).
    """

    def __init__(self, where, prefix):
        self.where = where
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
                client = _Client(make_client(self.where, asyncio_client=False))
                self._sync = (os.getpid(), client)
            return client

    def async_client(self):
        loop = asyncio.get_running_loop()
        owner, client = self._async
        if owner is not loop:
            client = _Client(make_client(self.where, asyncio_client=True))
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
        """Append a message to the service's stream; return its ``Published(id, epoch, prev)``.

        Raises ``NotReplicated`` when ``DEPLOY_HISTORY_REPLICAS`` replicas did not acknowledge it.
        """
        client, wanted = self.sync_client(), replicas()
        keys, args = self.keys(service), self._publish_args(message, source, ts)
        if not wanted:
            return Published(*client.publish(keys, args))
        # One connection for both: WAIT counts the replicas that have this connection's writes.
        pipe = client.client.pipeline(transaction=False)
        client.publish(keys, args, client=pipe)
        pipe.wait(wanted, wait_ms())
        published, acknowledged = pipe.execute()
        published = Published(*published)
        check_replicated(published.id, acknowledged, wanted)
        return published

    async def publish(self, service, message, source, ts):
        client, wanted = self.async_client(), replicas()
        keys, args = self.keys(service), self._publish_args(message, source, ts)
        if not wanted:
            return Published(*await client.publish(keys, args))
        pipe = client.client.pipeline(transaction=False)
        await client.publish(keys, args, client=pipe)
        pipe.wait(wanted, wait_ms())
        published, acknowledged = await pipe.execute()
        published = Published(*published)
        check_replicated(published.id, acknowledged, wanted)
        return published

    async def head(self, service):
        """``(epoch, newest id)`` of the service's stream; ``("", "0-0")`` when there is none."""
        epoch, newest = await read_twice(self.async_client().head, self.keys(service))
        return epoch or "", newest or format_id(START)

    async def read(self, service, after):
        """A ``Snapshot`` of the entries after ``after``, an ``(ms, n)`` pair."""
        epoch, raw, trimmed, first = await read_twice(
            self.async_client().read, self.keys(service), [format_id(next_id(after))]
        )
        # Entries are only ever trimmed from the front: all of them are before the first one.
        # (Without the count of entries added, Redis < 7, that may have been trimmed.)
        deleted = previous_id(parse_id(first)) if first and trimmed != 0 else START
        return Snapshot(epoch or "", [entry(*item) for item in raw], deleted)

    async def between(self, service, after, before):
        """``(epoch, entries)``: the entries after ``after`` and before ``before`` (pairs)."""
        # XRANGE of an empty range (start after end) returns no entry.
        epoch, raw = await read_twice(
            self.async_client().between,
            self.keys(service),
            [format_id(next_id(after)), format_id(previous_id(before))],
        )
        return epoch or "", [entry(*item) for item in raw]


def entry(entry_id, pairs):
    """An ``Entry`` from a stream entry as Redis returns it: id, flat field/value list."""
    fields = dict(zip(pairs[::2], pairs[1::2]))
    return Entry(entry_id, *(fields.get(name, "") for name in ("message", "source", "ts", "prev")))
