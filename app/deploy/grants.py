"""Grants: who may read a service's messages over a websocket, and who may send to it.

A grant is a token signed with ``SECRET_KEY`` (``django.core.signing``) that names the services it
opens (one name, or a pattern with ``*``), whether it may send, and when it expires::

    <payload>.<signature>    payload: base64url of {"s": "tasks", "w": 0, "e": 1767225600}

Its characters are those of a websocket subprotocol name, so clients offer it in the handshake's
``Sec-WebSocket-Protocol`` header, as ``deploy, grant.<token>``: a header is not written to access
logs, a URL's query would be. The server selects ``deploy``.

Where grants come from: the page's ``/deploy/<service>/grant/`` view, for a signed-in user with the
``deploy.read_stream`` permission (``deploy.write_stream`` to send); ``manage.py grant`` for machine
clients. A grant is checked when a websocket opens; an open websocket outlives its grant's expiry.
Changing ``SECRET_KEY`` revokes every grant.

Sending needs a grant that may send *and* a service named by ``DEPLOY_CLIENT_WRITE_SERVICES``.
``DEPLOY_WEBSOCKET_ACCESS=open`` lets anyone read, and send to those services, without a grant.
"""

import base64
import binascii
import json
import time
from fnmatch import fnmatchcase

from django.conf import settings
from django.core.signing import BadSignature, Signer

from deploy.protocol import InvalidInput, validate_pattern

SALT = "deploy.grants"
#: The subprotocol the server selects, and the prefix of the one that carries the grant.
SUBPROTOCOL = "deploy"
GRANT_PREFIX = "grant."
#: The longest lifetime a grant may be given (``manage.py grant --seconds``).
MAX_SECONDS = 366 * 86400


class Refused(Exception):
    """A websocket's grant is missing, malformed, forged, expired or for other services."""


class Grant:
    """What a valid grant allows: reading the services matching ``pattern``; sending if ``write``
    (to services that let clients send)."""

    def __init__(self, pattern, write, expires):
        self.pattern, self.write, self.expires = pattern, write, expires

    def covers(self, service):
        return fnmatchcase(service, self.pattern)

    def __repr__(self):
        return f"Grant({self.pattern!r}, write={self.write}, expires={self.expires})"


def _signer():
    return Signer(sep=".", salt=SALT)


def _b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(pattern, write=False, seconds=None, now=None):
    """A grant token for the services matching ``pattern``, valid for ``seconds``
    (``DEPLOY_GRANT_SECONDS`` by default). ``InvalidInput`` for a bad pattern or lifetime."""
    validate_pattern(pattern)
    seconds = settings.DEPLOY_GRANT_SECONDS if seconds is None else seconds
    if not 1 <= seconds <= MAX_SECONDS:
        raise InvalidInput(f"a grant lasts 1 to {MAX_SECONDS} seconds, not {seconds}")
    expires = int(now if now is not None else time.time()) + int(seconds)
    payload = json.dumps({"s": pattern, "w": int(bool(write)), "e": expires}, separators=(",", ":"))
    return _signer().sign(_b64encode(payload.encode("utf-8")))


def verify(token, service, now=None):
    """The ``Grant`` of ``token`` if it is genuine, unexpired and covers ``service``; else
    ``Refused`` saying why."""
    if not token:
        raise Refused("no grant offered")
    try:
        payload = _signer().unsign(token)
    except BadSignature:
        raise Refused("the grant's signature is wrong") from None
    try:
        data = json.loads(_b64decode(payload).decode("utf-8"))
        grant = Grant(str(data["s"]), bool(data["w"]), int(data["e"]))
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise Refused("the grant is malformed") from None
    if grant.expires <= (now if now is not None else time.time()):
        raise Refused("the grant has expired")
    if not grant.covers(service):
        raise Refused(f"the grant is for {grant.pattern!r}")
    return grant


def offered(subprotocols):
    """``(token, selected subprotocol)`` from the handshake's subprotocols; either may be None."""
    token = None
    for name in subprotocols or ():
        if name.startswith(GRANT_PREFIX):
            token = name[len(GRANT_PREFIX) :]
    return token, (SUBPROTOCOL if SUBPROTOCOL in (subprotocols or ()) else None)


def clients_may_send(service):
    """Whether ``DEPLOY_CLIENT_WRITE_SERVICES`` lets websocket clients send to ``service``."""
    return any(fnmatchcase(service, pattern) for pattern in settings.DEPLOY_CLIENT_WRITE_SERVICES)


def access(subprotocols, service):
    """``(may send, selected subprotocol)`` of a websocket of ``service``; ``Refused`` when it may
    not read."""
    token, selected = offered(subprotocols)
    if settings.DEPLOY_WEBSOCKET_ACCESS == "open":
        return clients_may_send(service), selected
    grant = verify(token, service)
    return grant.write and clients_may_send(service), selected
