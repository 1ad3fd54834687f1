"""The websocket Origin check: the page's own origin, or one the settings trust.

A browser sends the origin of the page that opens a websocket; a page of another site must not read
or write the streams with the visitor's cookies. channels' ``AllowedHostsOriginValidator`` compares
host names only, so ``http://127.0.0.1:9999`` (another server on the same machine) or
``https://site`` for a site served over http pass it. Here the scheme, host and port must all be the
site's: the ``Host`` the client asked for (one of ``ALLOWED_HOSTS``; nginx passes its port on) and
the scheme it used (nginx's ``X-Forwarded-Proto``, else the connection's own). Or the origin equals
one of ``WEBSOCKET_TRUSTED_ORIGINS`` (``DJANGO_CSRF_TRUSTED_ORIGINS``; ``https://*.example.org``
trusts the subdomains).
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}
#: The page's scheme for the scheme of a websocket connection.
PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def parse(origin):
    """``(scheme, host, port)`` of an http(s) origin, the port filled in; else ``None``."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:  # a port that is no number, or out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def header(scope, name):
    """The value of header ``name`` (bytes, lower case) in an ASGI scope, or ``None``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def allowed_hosts():
    """``ALLOWED_HOSTS``, or what Django allows with ``DEBUG`` and none set."""
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def site_origin(scope):
    """The origin the client connected to: its ``Host`` header, if ``ALLOWED_HOSTS`` has it, and the
    scheme of the page."""
    host = header(scope, b"host")
    if not host or not validate_host(split_domain_port(host.lower())[0], allowed_hosts()):
        return None
    forwarded = header(scope, b"x-forwarded-proto")
    scheme = forwarded.split(",")[0].strip().lower() if forwarded else scope.get("scheme", "ws")
    return parse(f"{PAGE_SCHEMES.get(scheme, scheme)}://{host}")


def trusted(origin):
    """Whether a parsed origin is one of ``WEBSOCKET_TRUSTED_ORIGINS``."""
    for pattern in settings.WEBSOCKET_TRUSTED_ORIGINS:
        wildcard = "://*." in pattern
        allowed = parse(pattern.replace("://*.", "://", 1))
        if allowed is None or allowed[0] != origin[0] or allowed[2] != origin[2]:
            continue
        if origin[1] == allowed[1] or (wildcard and is_same_domain(origin[1], "." + allowed[1])):
            return True
    return False


def allowed(scope):
    """Whether the websocket handshake in ``scope`` comes from the site's page or a trusted one."""
    origin = parse(header(scope, b"origin") or "")
    return origin is not None and (origin == site_origin(scope) or trusted(origin))
