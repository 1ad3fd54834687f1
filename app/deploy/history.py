"""The message history of each service, from which reconnecting websockets resume.

Every published message is appended to its service's stream and gets an id ``"<ms>-<n>"``; the
stream also has an *epoch*, a random token that changes whenever the stream is lost and starts
again, so that ids of two different streams are never compared. A websocket that reconnects
with the last id and epoch it saw gets what it missed (``resume``).

Two backends share one interface: ``MemoryHistory`` for the in-memory channel layer (tests, one
process) and ``deploy.history_redis.RedisHistory`` (Redis streams) for the Redis layers.
``get_history`` picks the one that goes with a channel layer, or None when the history is off:
``DEPLOY_HISTORY_LENGTH=0``, or a profile without redis-py's asyncio client (legacy).
"""

import json
import re
import secrets
import threading
import time
import weakref
from collections import deque
from typing import NamedTuple, Optional

from channels.layers import DEFAULT_CHANNEL_LAYER, InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from deploy.compat import has_redis_asyncio
from deploy.protocol import InvalidInput

STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
EPOCH = re.compile(r"[A-Za-z0-9_-]{0,64}")
#: The position before every entry: what a client has seen of an empty or missing stream.
START = (0, 0)
#: Both parts of a stream id are unsigned 64-bit integers.
ID_PART_LIMIT = 2**64

RESUMED = "resumed"
GAP = "gap"
#: Reasons of a gap: the stream started again, or entries after the position were trimmed.
EPOCH_CHANGED = "epoch"
TRIMMED = "trimmed"

#: Whether this profile can keep a history at all.
AVAILABLE = has_redis_asyncio()


def parse_id(text):
    """Return the ``(ms, n)`` pair of a stream id ``"<ms>-<n>"``; raise ``InvalidInput`` if bad."""
    match = STREAM_ID.fullmatch(text) if isinstance(text, str) else None
    pair = (int(match.group(1)), int(match.group(2))) if match else None
    if pair is None or max(pair) >= ID_PART_LIMIT:
        raise InvalidInput(f"invalid message id {text!r}: expected <ms>-<n>")
    return pair


def format_id(pair):
    """The stream id ``"<ms>-<n>"`` of an ``(ms, n)`` pair."""
    return f"{pair[0]}-{pair[1]}"


def next_id(pair):
    """The smallest stream id after ``pair``."""
    ms, n = pair
    return (ms, n + 1) if n + 1 < ID_PART_LIMIT else (ms + 1, 0)


def previous_id(pair):
    """The largest stream id before ``pair`` (``START`` for ``START`` itself)."""
    ms, n = pair
    if n:
        return ms, n - 1
    return (ms - 1, ID_PART_LIMIT - 1) if ms else START


def check_epoch(epoch):
    """Raise ``InvalidInput`` unless ``epoch`` looks like an epoch this module hands out."""
    if not (isinstance(epoch, str) and EPOCH.fullmatch(epoch)):
        raise InvalidInput(f"invalid epoch {epoch!r}: expected up to 64 of A-Z a-z 0-9 _ -")


def new_epoch():
    """A fresh random epoch token."""
    return secrets.token_urlsafe(12)


class Entry(NamedTuple):
    """One message of a stream.

    ``prev`` is the id of the stream's entry before it when it was added (``"0-0"`` for the
    first one; ``""`` when unknown: an entry written by a release that did not store it).
    """

    id: str
    message: str
    source: str
    ts: str
    prev: str = ""


class Published(NamedTuple):
    """What publishing a message returns: its id, the stream's epoch, the id before it."""

    id: str
    epoch: str
    prev: str


class Snapshot(NamedTuple):
    """What a stream holds after a position, read at once.

    ``epoch`` is ``""`` when the service has no stream (and no epoch) yet. ``deleted`` bounds
    what was trimmed from the stream: no entry after it ever was (an ``(ms, n)`` pair; ``START``
    when nothing was).
    """

    epoch: str
    entries: list
    deleted: tuple


class Resume(NamedTuple):
    """What a reconnecting client gets: ``entries`` to replay, then a ``resumed`` or ``gap`` frame.

    ``epoch`` is the stream's; ``reason`` of a gap is ``"epoch"`` (the stream started again) or
    ``"trimmed"``.
    """

    epoch: str
    entries: list
    outcome: str
    reason: Optional[str] = None


def same_epoch(epoch, after, current):
    """Whether a client at ``after`` of ``epoch`` is in the ``current`` epoch of the stream.

    A client that saw nothing (``START``) of a service without a stream (epoch ``""``) is in
    every epoch: whatever the stream holds now is all it missed.
    """
    return epoch == current or (epoch == "" and after == START)


async def resume(history, service, after, epoch):
    """What a client at position ``after`` (an ``(ms, n)`` pair) of ``epoch`` missed.

    It resumes when it is in the stream's epoch and nothing after its position was trimmed:
    then the entries after ``after`` are all it missed. Otherwise it gets what the stream still
    holds after its position (all of it for another epoch) and a gap.
    """
    snapshot = await history.read(service, after)
    if not same_epoch(epoch, after, snapshot.epoch):
        snapshot = await history.read(service, START)
        if not same_epoch(epoch, after, snapshot.epoch):
            return Resume(snapshot.epoch, snapshot.entries, GAP, EPOCH_CHANGED)
        # The stream changed between the two reads: keep what is after the position only.
        entries = [entry for entry in snapshot.entries if parse_id(entry.id) > after]
        snapshot = snapshot._replace(entries=entries)
    if snapshot.deleted > after:
        return Resume(snapshot.epoch, snapshot.entries, GAP, TRIMMED)
    return Resume(snapshot.epoch, snapshot.entries, RESUMED)


def history_length():
    """Entries kept per stream (``DEPLOY_HISTORY_LENGTH``)."""
    return settings.DEPLOY_HISTORY_LENGTH


class MemoryHistory:
    """The history in this process's memory, with the semantics of the Redis backend.

    Goes with ``InMemoryChannelLayer``: one instance per layer, so a new layer starts with an
    empty history. Trims exactly to ``DEPLOY_HISTORY_LENGTH`` where Redis trims about there.
    """

    class Stream:
        def __init__(self):
            self.epoch = new_epoch()
            self.entries = deque()
            self.last = START
            self.deleted = START

    def __init__(self):
        self.streams = {}
        self.lock = threading.Lock()

    def publish_sync(self, service, message, source, ts):
        """Append a message to the service's stream; return its ``Published(id, epoch, prev)``."""
        with self.lock:
            stream = self.streams.get(service)
            if stream is None:
                stream = self.streams[service] = self.Stream()
            prev = stream.entries[-1].id if stream.entries else format_id(START)
            now = int(time.time() * 1000)
            last_ms, last_n = stream.last
            stream.last = (now, 0) if now > last_ms else (last_ms, last_n + 1)
            entry_id = format_id(stream.last)
            stream.entries.append(Entry(entry_id, message, source, ts, prev))
            while len(stream.entries) > history_length():
                stream.deleted = parse_id(stream.entries.popleft().id)
            return Published(entry_id, stream.epoch, prev)

    async def publish(self, service, message, source, ts):
        return self.publish_sync(service, message, source, ts)

    async def head(self, service):
        """``(epoch, newest id)`` of the service's stream; ``("", "0-0")`` when there is none."""
        with self.lock:
            stream = self.streams.get(service)
            if stream is None or not stream.entries:
                return (stream.epoch if stream else ""), format_id(START)
            return stream.epoch, stream.entries[-1].id

    async def read(self, service, after):
        """A ``Snapshot`` of the entries after ``after``, an ``(ms, n)`` pair."""
        with self.lock:
            stream = self.streams.get(service)
            if stream is None:
                return Snapshot("", [], START)
            entries = [entry for entry in stream.entries if parse_id(entry.id) > after]
            return Snapshot(stream.epoch, entries, stream.deleted)

    async def between(self, service, after, before):
        """``(epoch, entries)``: the entries after ``after`` and before ``before`` (pairs)."""
        with self.lock:
            stream = self.streams.get(service)
            if stream is None:
                return "", []
            entries = [e for e in stream.entries if after < parse_id(e.id) < before]
            return stream.epoch, entries


_memory_histories = weakref.WeakKeyDictionary()
_redis_histories = {}
_lock = threading.Lock()


def get_history(layer=None):
    """The history that goes with a channel layer (the default one), or None when it is off."""
    if not AVAILABLE or history_length() == 0:
        return None
    if layer is None:
        layer = get_channel_layer()
    with _lock:
        if isinstance(layer, InMemoryChannelLayer):
            history = _memory_histories.get(layer)
            if history is None:
                history = _memory_histories[layer] = MemoryHistory()
            return history
        redis = layer_redis()
        key = (json.dumps(redis, sort_keys=True), settings.CHANNELS_PREFIX)
        history = _redis_histories.get(key)
        if history is None:
            from deploy.history_redis import RedisHistory

            history = _redis_histories[key] = RedisHistory(redis, settings.CHANNELS_PREFIX)
        return history


#: The keys of a channels-redis sentinel host that say where Redis is (not pool options).
SENTINEL_KEYS = ("sentinels", "master_name", "sentinel_kwargs", "username", "password", "db")


def layer_redis():
    """Where the channel layer's Redis is (its first host): a URL, or a sentinel host dict."""
    config = settings.CHANNEL_LAYERS[DEFAULT_CHANNEL_LAYER].get("CONFIG", {})
    hosts = config.get("hosts") or []
    host = hosts[0] if hosts else None
    if isinstance(host, dict):
        if "master_name" in host:
            where = {key: host[key] for key in SENTINEL_KEYS if key in host}
            # The layer's retry policy is an asyncio object; the history sets its own.
            kwargs = where.get("sentinel_kwargs") or {}
            where["sentinel_kwargs"] = {k: v for k, v in kwargs.items() if k != "retry"}
            return where
        host = host.get("address")
    if not isinstance(host, str):
        raise ImproperlyConfigured("the deploy history needs a channel layer with a Redis URL")
    return host
