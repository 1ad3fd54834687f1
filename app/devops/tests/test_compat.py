"""The legacy branches of ``devops.compat`` that can be exercised on the modern profile."""

import os
import subprocess
import sys

import channels_redis

from deploy.tests.helpers import APP_DIR, modern_only
from devops import compat


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


def test_pubsub_layer_is_known_by_its_module(monkeypatch):
    version = tuple(int(part) for part in channels_redis.__version__.split(".")[:2])
    assert compat.has_redis_pubsub_layer() is (version >= (3, 3))
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: None)
    assert compat.has_redis_pubsub_layer() is False


def test_settings_load_without_channels():
    """The settings and their shims import neither channels nor the deploy app."""
    code = (
        "import sys, devops.settings\n"
        "print(' '.join(sorted(name for name in sys.modules if name.split('.')[0] in"
        " ('channels', 'daphne', 'deploy') or name.startswith('channels_redis.'))))"
    )
    env = {"CHANNEL_LAYER": "redis", "REDIS_URL": "redis://:pw@127.0.0.1:6379/0"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=APP_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
