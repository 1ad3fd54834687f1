"""The deploy message protocol: service names, messages, groups and client frames.

Shared by the websocket consumer, the push function, the ``push`` command and the HTTP push
endpoint, so all four accept and reject exactly the same input.
"""

import json
import re
import socket
from datetime import datetime, timezone

from django.conf import settings

from devops.env import SERVICE_PATTERN

SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NODE_GROUP_PREFIX = "deploy.node."
#: Characters channels refuses in group names; a node name's are replaced by "-".
NOT_IN_GROUP_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: channels' limit on group names.
MAX_GROUP_NAME = 99
#: Bytes a message frame the consumer sends adds to its message at most (service, seq, ts, source,
#: id, epoch, prev, replay): the ASGI servers accept websocket messages up to the maximum plus this,
#: and daphne's limit holds for what it sends too.
FRAME_OVERHEAD = 1024


class InvalidInput(ValueError):
    """A service name, message or client frame that is refused."""


class MessageTooLarge(InvalidInput):
    """A message or frame over ``DEPLOY_MAX_MESSAGE_BYTES``."""


def validate_service(service):
    """Raise ``InvalidInput`` unless ``service`` is 1-64 of ``A-Z a-z 0-9 _ . -``."""
    if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
        raise InvalidInput(f"invalid service name {service!r}: use 1-64 of A-Z a-z 0-9 _ . -")


def validate_pattern(pattern):
    """Raise ``InvalidInput`` unless ``pattern`` is 1-64 of ``A-Z a-z 0-9 _ . - *``."""
    if not isinstance(pattern, str) or not SERVICE_PATTERN.fullmatch(pattern):
        raise InvalidInput(f"invalid service pattern {pattern!r}: use 1-64 of A-Z a-z 0-9 _ . - *")


def validate_message(message):
    """Raise ``InvalidInput`` unless ``message`` is a non-empty string within the size limit."""
    if not isinstance(message, str):
        raise InvalidInput("message must be a string")
    if not message:
        raise InvalidInput("message is empty")
    # Counted as the clients get it: a JSON string in a frame, quotes and control characters
    # escaped; so a frame the consumer sends fits the ASGI server's limit (+ FRAME_OVERHEAD).
    check_size(dumps(message)[1:-1], "message")


def dumps(value):
    """JSON text of ``value`` as the consumer sends it: non-ASCII characters as they are."""
    return json.dumps(value, ensure_ascii=False)


def check_size(text, what):
    """Raise ``MessageTooLarge`` if ``text`` is over ``DEPLOY_MAX_MESSAGE_BYTES`` in UTF-8."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can carry a lone surrogate ("\ud800"): no text a client can be sent.
        raise InvalidInput(f"{what} is not valid Unicode text (a lone surrogate)") from None
    limit = settings.DEPLOY_MAX_MESSAGE_BYTES
    if size > limit:
        raise MessageTooLarge(f"{what} is {size} bytes, the limit is {limit}")


def group_name(service):
    """The channel-layer group of a service's clients."""
    return f"deploy.{service}"


def current_node():
    """This process's node name for draining: ``DEPLOY_NODE``, else the host name."""
    return settings.DEPLOY_NODE or socket.gethostname()


def node_group(node):
    """The channel-layer group of a node's websocket consumers, ``deploy.node.<node>``.

    The node name is sanitised into a valid group name: characters other than
    ``A-Z a-z 0-9 _ . -`` become ``-`` and the name is cut to fit channels' length limit.
    """
    name = NOT_IN_GROUP_NAME.sub("-", node) or "-"
    return NODE_GROUP_PREFIX + name[: MAX_GROUP_NAME - len(NODE_GROUP_PREFIX)]


def timestamp():
    """Now, as an ISO 8601 string in UTC."""
    return datetime.now(timezone.utc).isoformat()


def loads(text):
    """``json.loads`` that refuses nesting deeper than the recursion limit with ``InvalidInput``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidInput("JSON is nested too deeply") from None


def parse_client_frame(text_data):
    """Return the message of a client frame ``{"message": "..."}`` or raise ``InvalidInput``.

    ``text_data`` is None for a binary frame, which is refused too.
    """
    if text_data is None:
        raise InvalidInput("binary frames are not accepted; send JSON text")
    check_size(text_data, "frame")
    try:
        frame = loads(text_data)
    except InvalidInput:
        raise
    except ValueError:
        raise InvalidInput("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise InvalidInput('frame must be a JSON object like {"message": "..."}')
    if "message" not in frame:
        raise InvalidInput('frame has no "message"')
    validate_message(frame["message"])
    return frame["message"]
