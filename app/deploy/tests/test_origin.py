"""deploy.origin: the websocket Origin must be the site's own (scheme, host and port) or trusted."""

from urllib.parse import urlparse

import pytest
from channels.security.websocket import AllowedHostsOriginValidator

from deploy import origin
from deploy.tests.helpers import modern_only


def scope(origin_header=None, host="localhost", scheme="ws", forwarded_proto=None):
    headers = [(b"host", host.encode())] if host is not None else []
    if origin_header is not None:
        headers.append((b"origin", origin_header.encode()))
    if forwarded_proto is not None:
        headers.append((b"x-forwarded-proto", forwarded_proto.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.fixture(autouse=True)
def site(settings):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", ".example.org"]
    settings.WEBSOCKET_TRUSTED_ORIGINS = [
        "https://dashboard.example.net",
        "https://*.trusted.example",
    ]


@pytest.mark.parametrize(
    ("origin_header", "host", "scheme", "forwarded_proto", "expected"),
    [
        ("http://localhost", "localhost", "ws", None, True),
        ("http://LOCALHOST:80", "localhost", "ws", None, True),  # the default port, named
        ("http://127.0.0.1:8080", "127.0.0.1:8080", "ws", None, True),
        ("http://[::1]:8080", "[::1]:8080", "ws", None, True),
        ("https://a.example.org", "a.example.org", "wss", None, True),
        ("https://localhost", "localhost", "ws", "https", True),  # TLS ends at nginx, which says so
        # The two: allowed host names, but another port or scheme than the page's.
        ("http://127.0.0.1:9999", "127.0.0.1", "ws", None, False),
        ("https://127.0.0.1", "127.0.0.1", "ws", None, False),
        ("http://localhost", "localhost", "ws", "https", False),
        ("http://evil.example", "evil.example", "ws", None, False),  # not in ALLOWED_HOSTS
        ("http://localhost", None, "ws", None, False),
        (None, "localhost", "ws", None, False),
        ("null", "localhost", "ws", None, False),
        ("http://localhost:99999", "localhost", "ws", None, False),
        ("ftp://localhost", "localhost", "ws", None, False),
        ("http://localhost/path", "localhost", "ws", None, False),
    ],
)
def test_the_sites_own_origin_only(origin_header, host, scheme, forwarded_proto, expected):
    assert origin.allowed(scope(origin_header, host, scheme, forwarded_proto)) is expected


@pytest.mark.parametrize(
    ("origin_header", "expected"),
    [
        ("https://dashboard.example.net", True),
        ("https://dashboard.example.net:443", True),
        ("http://dashboard.example.net", False),
        ("https://dashboard.example.net:8443", False),
        ("https://a.trusted.example", True),
        ("https://a.b.trusted.example", True),
        ("https://trusted.example", True),  # as Django reads *. in CSRF_TRUSTED_ORIGINS
        ("https://eviltrusted.example", False),
    ],
)
def test_trusted_origins_match_scheme_host_and_port(origin_header, expected):
    assert origin.allowed(scope(origin_header, host="localhost")) is expected


@modern_only
@pytest.mark.parametrize("origin_header", ["http://127.0.0.1:9999", "https://127.0.0.1"])
def test_channels_host_name_check_alone_lets_another_port_or_scheme_through(origin_header):
    # The check the app used before: host names only. What it accepts, this module refuses.
    validator = AllowedHostsOriginValidator(None)
    assert validator.valid_origin(urlparse(origin_header))
    assert not origin.allowed(scope(origin_header, host="127.0.0.1"))
