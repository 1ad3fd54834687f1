"""The websocket consumer behind ``ws/deploy/<service>/``."""

import json
import logging

from channels.generic.websocket import AsyncWebsocketConsumer

from deploy.protocol import (
    InvalidInput,
    group_name,
    parse_client_frame,
    timestamp,
    validate_service,
)

logger = logging.getLogger(__name__)

#: Close code sent right after accepting a connection for an invalid service name.
INVALID_SERVICE = 4400


class DeployConsumer(AsyncWebsocketConsumer):
    """Streams a service's messages to one client and broadcasts what that client sends.

    The client joins the group ``deploy.<service>``. Channel-layer events are dispatched to the
    method named like the event type with dots turned into underscores:

    * ``deploy.message`` ``{"message", "source", "ts"}``: the event everything in this app sends;
    * ``deploy.run`` ``{"text"}``: what the original blog post's ``send_channel_msg`` sends.
    """

    service = None
    group = None
    seq = 0

    async def connect(self):
        service = self.scope["url_route"]["kwargs"]["service"]
        try:
            validate_service(service)
        except InvalidInput as exc:
            logger.warning("refused websocket from %s: %s", self.peer, exc)
            await self.accept()
            await self.close(code=INVALID_SERVICE)
            return
        self.service = service
        self.group = group_name(service)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if self.group is None:
            return  # a frame that raced the 4400 close
        try:
            message = parse_client_frame(text_data)
        except InvalidInput as exc:
            logger.warning("service %s: refused frame from %s: %s", self.service, self.peer, exc)
            await self.send(text_data=json.dumps({"type": "error", "error": str(exc)}))
            return
        await self.channel_layer.group_send(
            self.group,
            {"type": "deploy.message", "message": message, "source": "client", "ts": timestamp()},
        )

    async def deploy_message(self, event):
        await self.deliver(event["message"], event["source"], event["ts"])

    async def deploy_run(self, event):
        """The blog post's event, ``{"type": "deploy.run", "text": ...}``, shown as a push."""
        await self.deliver(str(event["text"]), "push", timestamp())

    async def deliver(self, message, source, ts):
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
        await self.send(text_data=json.dumps(frame))

    @property
    def peer(self):
        """``host:port`` of the client, for log lines."""
        client = self.scope.get("client")
        return f"{client[0]}:{client[1]}" if client else "unknown client"
