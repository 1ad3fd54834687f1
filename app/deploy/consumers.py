"""The websocket consumer behind ``ws/deploy/<service>/``."""

import asyncio
import logging
import time
import weakref
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from deploy import grants, history, metrics, origin
from deploy.protocol import (
    InvalidInput,
    current_node,
    dumps,
    group_name,
    node_group,
    parse_client_frame,
    timestamp,
    validate_service,
)

logger = logging.getLogger(__name__)

#: Close code sent right after accepting a connection for an invalid service name.
INVALID_SERVICE = 4400
#: Close code sent right after accepting a connection without a valid grant (``deploy.grants``).
NOT_GRANTED = 4403
#: Close code of a drained node: reconnect at once (to another host) and resume.
DRAINING = 4012
#: Close code when missed messages cannot be read from the history: reconnect and resume.
UNREADABLE_GAP = 1011
#: Close code of a client sending frames faster than ``DEPLOY_CLIENT_FRAMES_PER_SECOND``.
TOO_MANY_FRAMES = 4429
#: Close code after ``DEPLOY_CLIENT_BAD_FRAMES`` refused frames: 1008 (policy violation) in the
#: application range, as daphne (autobahn) sends no code below 3000 but 1000 (1008 became 1011).
TOO_MANY_BAD_FRAMES = 4008


class FrameBudget:
    """A token bucket: ``rate`` frames per second on average, ``burst`` at once."""

    def __init__(self, rate, burst, clock=None):
        self.rate, self.burst = rate, burst
        self.clock = clock or asyncio.get_running_loop().time
        self.tokens, self.updated = float(burst), self.clock()

    def take(self):
        """Spend one frame's token; False when there is none left."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class SharedHeads:
    """The newest entry of each service's stream, read at most once per ``max_age`` seconds in this
    process and shared by all its consumers of the service (one read, not one per client)."""

    def __init__(self):
        self.reads = {}  # (history, service) -> (loop time, task)

    def get(self, history, service, max_age):
        loop = asyncio.get_running_loop()
        now, key = loop.time(), (history, service)
        read = self.reads.get(key)
        if read is None or now - read[0] >= max_age or (read[1].done() and read[1].exception()):
            if len(self.reads) > 10000:  # services nobody asked about lately
                self.reads = {k: v for k, v in self.reads.items() if now - v[0] < max_age}
            read = self.reads[key] = (now, loop.create_task(history.head(service)))
        return asyncio.shield(read[1])


_heads = weakref.WeakKeyDictionary()  # event loop -> SharedHeads


def shared_head(history, service, max_age):
    """``(epoch, newest id)`` of the service's stream, at most ``max_age`` seconds old."""
    loop = asyncio.get_running_loop()
    heads = _heads.get(loop)
    if heads is None:
        heads = _heads[loop] = SharedHeads()
    return heads.get(history, service, max_age)


class DeployConsumer(AsyncWebsocketConsumer):
    """Streams a service's messages to one client and broadcasts what that client sends.

    The client joins the group ``deploy.<service>`` and its node's group ``deploy.node.<node>``.
    Channel-layer events are dispatched to the method named like the event type with dots turned
    into underscores:

    * ``deploy.message`` ``{"message", "source", "ts"}`` (+ ``"id", "epoch", "prev"`` with the
      history on): the event everything in this app sends;
    * ``deploy.run`` ``{"text"}``: what the original blog post's ``send_channel_msg`` sends;
    * ``deploy.drain``: ``manage.py drain_websockets`` closes the connection with 4012.

    With the history on (``deploy.history``) the connection starts with a ``hello`` frame and,
    when the URL's query names the client's position (``?after=<id>&epoch=<epoch>``), replays
    what the client missed before the live messages. A live event whose ``prev`` (the id of the
    stream's entry before it) is after the newest entry sent means live events were lost (the
    pub/sub layer drops what is published around a Redis failover): the missing entries are read
    from the stream and sent first. The last messages before a quiet spell have no later event to
    show their loss: after ``DEPLOY_HISTORY_CHECK_MS`` without a message the consumer asks the
    stream for its newest entry and sends what it lacks (``check_history``).
    """

    service = None
    group = None
    node_group = None
    history = None
    seq = 0
    #: ``(epoch, (ms, n))``: the client has every entry up to there (its position, then what was
    #: replayed, then the live events with a ``prev``); live events at or below it are duplicates.
    replayed_to = None
    #: Set when the connection is being closed: later events are not sent.
    closing = False
    #: Held while a message is checked against ``replayed_to`` and sent (live, or by the check).
    ordering = None
    #: The task of ``check_history``; loop time of the last message frame sent.
    checker = None
    sent_at = 0.0
    #: The client's ``FrameBudget`` (None: no rate limit) and how many of its frames were refused.
    budget = None
    bad_frames = 0
    #: This connection's count in ``deploy_websockets_open`` (set once accepted).
    open_count = None
    #: Whether the client may send messages (its grant and ``DEPLOY_CLIENT_WRITE_SERVICES``).
    may_send = False

    async def dispatch(self, message):
        """Call the handler of ``message`` without closing old database connections first.

        Since channels 4.2 ``AsyncConsumer.dispatch`` runs ``aclose_old_connections()`` in a
        worker thread before every handler (django/channels#2090): one thread hop per delivered
        message, about 40 % of the CPU a delivery costs. This consumer never uses the database; a
        handler that comes to use the ORM must do it through ``database_sync_to_async``, which
        closes old connections around each call itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        if not origin.allowed(self.scope):
            logger.warning(
                "refused websocket from %s: origin %.200r is not the site's (%.200r)",
                self.peer,
                origin.header(self.scope, b"origin"),
                origin.header(self.scope, b"host"),
            )
            metrics.WEBSOCKETS_REFUSED.labels("origin").inc()
            await self.close()  # before accept: the handshake is refused (403)
            return
        service = self.scope["url_route"]["kwargs"]["service"]
        try:
            validate_service(service)
        except InvalidInput as exc:
            logger.warning("refused websocket from %s: %s", self.peer, exc)
            metrics.WEBSOCKETS_REFUSED.labels("service").inc()
            await self.accept()
            await self.close(code=INVALID_SERVICE)
            return
        try:
            self.may_send, subprotocol = grants.access(self.scope.get("subprotocols"), service)
        except grants.Refused as exc:
            logger.warning("refused websocket from %s for %s: %s", self.peer, service, exc)
            metrics.WEBSOCKETS_REFUSED.labels("grant").inc()
            # Accepted, then closed with a code the client can read (a refused handshake has none).
            await self.accept(grants.offered(self.scope.get("subprotocols"))[1])
            await self.close(code=NOT_GRANTED)
            return
        self.service = service
        if settings.DEPLOY_CLIENT_FRAMES_PER_SECOND > 0:
            rate = settings.DEPLOY_CLIENT_FRAMES_PER_SECOND
            self.budget = FrameBudget(rate, max(rate, settings.DEPLOY_CLIENT_FRAME_BURST))
        self.history = history.get_history(self.channel_layer)
        head = await self.history.head(service) if self.history is not None else None
        self.group = group_name(service)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.node_group = node_group(current_node())
        await self.channel_layer.group_add(self.node_group, self.channel_name)
        await self.accept(subprotocol)
        self.open_count = metrics.WEBSOCKETS_OPEN.labels(metrics.service_label(service))
        self.open_count.inc()
        if head is not None:
            self.ordering = asyncio.Lock()
            await self.start(*head)
            interval = settings.DEPLOY_HISTORY_CHECK_MS / 1000
            if interval > 0:
                self.checker = asyncio.get_running_loop().create_task(self.check_history(interval))

    async def start(self, epoch, last):
        """Say hello, then send what the client missed: since its position, or since joining."""
        hello = {"type": "hello", "service": self.service, "epoch": epoch, "last": last}
        await self.send_frame(hello)
        try:
            position = self.position()
        except InvalidInput as exc:
            logger.warning("service %s: bad position from %s: %s", self.service, self.peer, exc)
            await self.send_frame({"type": "error", "error": str(exc)})
            position = None
        if position is None:
            # Messages published between reading `last` and joining the group reach the
            # client only this way.
            snapshot = await self.history.read(self.service, history.parse_id(last))
            self.replayed_to = (snapshot.epoch, history.parse_id(last))
            for entry in snapshot.entries:
                await self.deliver_entry(entry, snapshot.epoch)
            metrics.REPLAY.inc(len(snapshot.entries))
            return
        after, client_epoch = position
        missed = await history.resume(self.history, self.service, after, client_epoch)
        seen = history.START if missed.reason == history.EPOCH_CHANGED else after
        self.replayed_to = (missed.epoch, seen)
        for entry in missed.entries:
            await self.deliver_entry(entry, missed.epoch, replay=True)
        metrics.REPLAY.inc(len(missed.entries))
        metrics.RESUMES.labels(missed.outcome).inc()
        frame = {"type": missed.outcome, "replayed": len(missed.entries)}
        if missed.reason:
            frame["reason"] = missed.reason
        await self.send_frame(frame)

    def position(self):
        """``(after, epoch)`` from the URL's query, None without ``after``; ``InvalidInput``."""
        query = parse_qs(
            self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        if "after" not in query:
            return None
        after = history.parse_id(query["after"][-1])
        epoch = query.get("epoch", [""])[-1]
        history.check_epoch(epoch)
        return after, epoch

    async def close_for(self, code):
        """Close the connection with ``code``; its later frames and events are dropped."""
        self.closing = True
        await self.close(code=code)

    async def disconnect(self, code):
        self.closing = True
        if self.open_count is not None:
            self.open_count.dec()
            self.open_count = None
        if self.checker is not None:
            self.checker.cancel()
        for group in (self.group, self.node_group):
            if group is not None:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if self.group is None or self.closing:
            return  # a frame that raced a 4400/4403 close, or came after a limit closed it
        if self.budget is not None and not self.budget.take():
            rate = settings.DEPLOY_CLIENT_FRAMES_PER_SECOND
            logger.warning("service %s: closed %s: over %s frames/s", self.service, self.peer, rate)
            metrics.FRAMES_REFUSED.labels("rate").inc()
            await self.close_for(TOO_MANY_FRAMES)
            return
        reason = "read_only" if not self.may_send else "invalid"
        try:
            if not self.may_send:
                raise InvalidInput(f"this connection may not send to {self.service}")
            message = parse_client_frame(text_data)
        except InvalidInput as exc:
            logger.warning("service %s: refused frame from %s: %s", self.service, self.peer, exc)
            metrics.FRAMES_REFUSED.labels(reason).inc()
            await self.send_frame({"type": "error", "error": str(exc)})
            self.bad_frames += 1
            if 0 < settings.DEPLOY_CLIENT_BAD_FRAMES <= self.bad_frames:
                logger.warning(
                    "service %s: closed %s after %s refused frames",
                    self.service,
                    self.peer,
                    self.bad_frames,
                )
                await self.close_for(TOO_MANY_BAD_FRAMES)
            return
        ts, ids = timestamp(), {}
        try:
            if self.history is not None:
                published = await self.history.publish(self.service, message, "client", ts)
                ids = {"id": published.id, "epoch": published.epoch, "prev": published.prev}
            await self.channel_layer.group_send(
                self.group,
                {"type": "deploy.message", "message": message, "source": "client", "ts": ts, **ids},
            )
        except Exception:
            metrics.LAYER_ERRORS.labels("push").inc()
            raise
        metrics.PUSHES.labels("client").inc()

    async def deploy_message(self, event):
        if self.closing:
            return
        if self.ordering is None:
            await self.deliver_event(event)
            return
        async with self.ordering:
            await self.deliver_event(event)

    async def deliver_event(self, event):
        entry_id = event.get("id") if self.history is not None else None
        prev = event.get("prev") if entry_id is not None else None
        if entry_id is not None and self.replayed_to is not None:
            epoch, newest = self.replayed_to
            event_epoch = event.get("epoch")
            if history.same_epoch(epoch, newest, event_epoch):
                position = history.parse_id(entry_id)
                if position <= newest:
                    return  # already sent (replay, or fetched with an earlier gap)
                if prev is not None:
                    if history.parse_id(prev) > newest and not await self.fill_gap(
                        event_epoch, newest, position
                    ):
                        return
                    self.replayed_to = (event_epoch, position)
        await self.deliver(
            event["message"], event["source"], event["ts"], entry_id, event.get("epoch"), prev=prev
        )
        metrics.LIVE.inc()
        metrics.observe_latency(event["ts"], time.time())

    async def fill_gap(self, epoch, newest, before):
        """Send the entries after ``newest`` and before ``before`` that no live event brought.

        Returns False when the history is unreachable: the connection is then closed (1011), and
        the client reconnects and resumes from its position instead of skipping the entries.
        """
        try:
            found_epoch, entries = await self.history.between(self.service, newest, before)
        except Exception as exc:
            metrics.LAYER_ERRORS.labels("gap_read").inc()
            metrics.GAPS_UNREADABLE.inc()
            logger.warning(
                "service %s: closing %s: missed messages unreadable: %s: %s",
                self.service,
                self.peer,
                type(exc).__name__,
                exc,
            )
            self.closing = True
            await self.close(code=UNREADABLE_GAP)
            return False
        if found_epoch != epoch:
            return True  # the stream started again meanwhile: those entries are gone
        logger.info(
            "service %s: %d message(s) missed by the channel layer sent from the history",
            self.service,
            len(entries),
        )
        for entry in entries:
            await self.deliver_entry(entry, epoch)
        metrics.GAP.inc(len(entries))
        return True

    async def check_history(self, interval):
        """After ``interval`` seconds without a message sent or a check, send the stream's entries
        after the newest one sent: entries whose live events the channel layer lost (a Redis master
        cut off, then replaced) with no later event whose ``prev`` would have shown the loss. Such
        an entry reaches the client within two intervals (the newest id is shared, see
        ``shared_head``)."""
        loop = asyncio.get_running_loop()
        checked_at = loop.time()
        while not self.closing:
            await asyncio.sleep(max(interval - (loop.time() - max(self.sent_at, checked_at)), 0.01))
            if self.closing or loop.time() - max(self.sent_at, checked_at) < interval:
                continue
            checked_at = loop.time()
            try:
                epoch, last = await shared_head(self.history, self.service, interval)
            except Exception as exc:
                metrics.LAYER_ERRORS.labels("history_check").inc()
                logger.warning(
                    "service %s: history check failed: %s: %s",
                    self.service,
                    type(exc).__name__,
                    exc,
                )
                continue
            async with self.ordering:
                known_epoch, newest = self.replayed_to
                position = history.parse_id(last)
                if self.closing or position <= newest:
                    continue
                if not history.same_epoch(known_epoch, newest, epoch):
                    continue  # a new stream: its live events are sent as they come
                if not await self.fill_gap(epoch, newest, history.next_id(position)):
                    return

    async def deploy_run(self, event):
        """The blog post's event, ``{"type": "deploy.run", "text": ...}``, shown as a push."""
        await self.deliver(str(event["text"]), "push", timestamp())
        metrics.LIVE.inc()

    async def deploy_drain(self, event):
        """This node is going away: close so that the client reconnects elsewhere and resumes."""
        await self.close(code=DRAINING)

    async def deliver_entry(self, entry, epoch, replay=False):
        """Send a history entry, remembering it as the newest one sent before the live messages."""
        self.replayed_to = (epoch, history.parse_id(entry.id))
        prev = entry.prev or None
        await self.deliver(entry.message, entry.source, entry.ts, entry.id, epoch, replay, prev)

    async def deliver(
        self, message, source, ts, entry_id=None, epoch=None, replay=False, prev=None
    ):
        """Send one message frame to the client, numbering it with this connection's ``seq``."""
        self.seq += 1
        frame = {
            "type": "message",
            "service": self.service,
            "message": message,
            "seq": self.seq,
            "ts": ts,
            "source": source,
        }
        if entry_id is not None:
            frame["id"], frame["epoch"] = entry_id, epoch
            if prev is not None:
                frame["prev"] = prev
        if replay:
            frame["replay"] = True
        await self.send_frame(frame)

    async def send_frame(self, frame):
        if frame["type"] == "message":
            self.sent_at = asyncio.get_running_loop().time()
        await self.send(text_data=dumps(frame))

    @property
    def peer(self):
        """``host:port`` of the client, for log lines."""
        client = self.scope.get("client")
        return f"{client[0]}:{client[1]}" if client else "unknown client"
