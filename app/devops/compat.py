"""Version shims of the project package: what settings and routes need to know about versions.

The app supports two dependency profiles from one code base:

* modern: Django 5.2, channels 4, channels-redis 4 (redis-py), asgiref 3;
* legacy: Django 1.11, channels 2.1, channels-redis 2.3 (aioredis 1), asgiref 2, Python 3.9.

The shims are split by when they run. This module serves ``devops.settings``, ``devops.env`` and
the route modules: it imports Django only (channels-redis only inside ``channel_layer_hosts``),
never channels, so loading the settings does not pull in the websocket consumer machinery. The
shims of the running app (ASGI application, consumers, channel layer calls, management
commands) are in ``deploy.compat``. Dropping the legacy profile means deleting the fallback
branches of both modules and nothing more.
"""

import importlib.util
from urllib.parse import unquote, urlsplit

import django

try:
    from django.urls import re_path  # Django >= 2.0
except ImportError:  # Django 1.11
    from django.conf.urls import url as re_path

__all__ = [
    "channel_layer_hosts",
    "csrf_trusted_origins",
    "has_redis_pubsub_layer",
    "re_path",
]


def csrf_trusted_origins(origins):
    """Adapt ``scheme://host`` origins to what this Django compares.

    Django >= 4.0 wants full origins; older versions compare bare host names.
    """
    if django.VERSION >= (4, 0):
        return list(origins)
    return [urlsplit(origin).netloc or origin for origin in origins]


def channel_layer_hosts(redis_url):
    """Return the ``hosts`` list of a channels-redis layer for one Redis URL.

    channels-redis >= 3 hands the URL to redis-py, which understands ``redis://`` and
    ``rediss://`` with percent-encoded passwords. channels-redis 2 uses aioredis 1, which does
    not percent-decode passwords, so there the URL is split into aioredis' own arguments.
    """
    import channels_redis  # its __init__ holds the version only

    if int(channels_redis.__version__.split(".")[0]) >= 3:
        return [redis_url]
    parts = urlsplit(redis_url)
    host = {
        "address": (parts.hostname, parts.port or 6379),
        "db": int(parts.path.lstrip("/") or 0),
    }
    if parts.password:
        host["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        host["ssl"] = True
    return [host]


def has_redis_pubsub_layer():
    """Whether channels-redis ships the pub/sub layer (channels-redis >= 3.3)."""
    return importlib.util.find_spec("channels_redis.pubsub") is not None
