"""The legacy branches of ``deploy.compat`` that can be exercised on the modern profile."""

from urllib.parse import urlparse

import channels_redis
import pytest
from channels.security.websocket import OriginValidator

from deploy import compat
from deploy.tests.helpers import modern_only


@modern_only
def test_channel_layer_hosts_for_channels_redis_4():
    url = "rediss://:s%40cret@cache.example.org:6380/1"
    assert compat.channel_layer_hosts(url) == [url]


def test_channel_layer_hosts_for_channels_redis_2(monkeypatch):
    """aioredis 1 gets an address tuple and the password percent-decoded."""
    monkeypatch.setattr(channels_redis, "__version__", "2.3.1")
    assert compat.channel_layer_hosts("rediss://:s%40cret@cache.example.org:6380/1") == [
        {"address": ("cache.example.org", 6380), "db": 1, "password": "s@cret", "ssl": True}
    ]
    assert compat.channel_layer_hosts("redis://localhost") == [
        {"address": ("localhost", 6379), "db": 0}
    ]


@modern_only
def test_csrf_trusted_origins_keep_scheme_on_modern_django():
    assert compat.csrf_trusted_origins(["https://a.example"]) == ["https://a.example"]


def test_csrf_trusted_origins_are_bare_hosts_on_django_1_11(monkeypatch):
    monkeypatch.setattr(compat.django, "VERSION", (1, 11, 29, "final", 0))
    assert compat.csrf_trusted_origins(["https://a.example", "b.example"]) == [
        "a.example",
        "b.example",
    ]


@modern_only
def test_modern_channels_origin_validator_is_used_as_is():
    validator = compat.allowed_hosts_origin_validator(None)
    assert type(validator) is OriginValidator


@modern_only
@pytest.mark.parametrize(
    "pattern", ["localhost", ".example.org", "example.org", "http://example.org:8080"]
)
@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:8000",
        "https://deploy.example.org",
        "http://example.org:8080",
        "https://example.org:8080",
        "http://evil.example",
        "null",
    ],
)
def test_repaired_origin_matching_agrees_with_modern_channels(pattern, origin):
    parsed = urlparse(origin)
    modern = OriginValidator(None, [pattern]).match_allowed_origin(parsed, pattern)
    repaired = compat._OriginValidator(None, [pattern]).match_allowed_origin(parsed, pattern)
    assert repaired == modern
