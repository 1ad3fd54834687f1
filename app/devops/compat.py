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
from django.core.exceptions import ImproperlyConfigured

try:
    from django.urls import re_path  # Django >= 2.0
except ImportError:  # Django 1.11
    from django.conf.urls import url as re_path

__all__ = [
    "aioredis_user_connection",
    "channel_layer_hosts",
    "csrf_trusted_origins",
    "has_redis_pubsub_layer",
    "has_redis_sentinel",
    "re_path",
    "sentinel_kwargs",
]


def csrf_trusted_origins(origins):
    """Adapt ``scheme://host`` origins to what this Django compares.

    Django >= 4.0 wants full origins; older versions compare bare host names.
    """
    if django.VERSION >= (4, 0):
        return list(origins)
    return [urlsplit(origin).netloc or origin for origin in origins]


def channel_layer_hosts(redis, options=None):
    """Return the ``hosts`` list of a channels-redis layer for one Redis.

    ``redis`` is a URL or a sentinel host dict (``devops.env.Env.redis``); ``options`` are
    connection pool options (socket timeouts, ``max_connections``) for channels-redis >= 4.

    channels-redis >= 3 hands the URL to redis-py, which understands ``redis://`` and
    ``rediss://`` with percent-encoded passwords. channels-redis 2 uses aioredis 1, which does
    not percent-decode passwords, so there the URL is split into aioredis' own arguments; it has
    no sentinel support and takes no pool options (they are left out there).
    """
    import channels_redis  # its __init__ holds the version only

    major = int(channels_redis.__version__.split(".")[0])
    if isinstance(redis, dict):
        if not has_redis_sentinel():
            raise ImproperlyConfigured(
                "REDIS_SENTINELS needs channels-redis >= 4 with redis-py (the modern profile);"
                f" this is channels-redis {channels_redis.__version__}: use REDIS_URL/REDIS_HOST"
            )
        return [
            {
                **redis,
                **(options or {}),
                "sentinel_kwargs": sentinel_kwargs(redis, asyncio_client=True),
            }
        ]
    if major >= 4 and options:
        return [{"address": redis, **options}]
    if major >= 3:
        return [redis]
    parts = urlsplit(redis)
    host = {
        "address": (parts.hostname, parts.port or 6379),
        "db": int(parts.path.lstrip("/") or 0),
    }
    if parts.password:
        host["password"] = unquote(parts.password)
    if parts.username:
        host["connection_cls"] = aioredis_user_connection(unquote(parts.username))
    if parts.scheme == "rediss":
        host["ssl"] = True
    return [host]


def aioredis_user_connection(username):
    """An aioredis 1 connection class that logs in as ``username`` (``AUTH username password``).

    aioredis 1 knows only the password form of ``AUTH`` (the ``default`` user of Redis >= 6);
    channels-redis 2 hands each host's ``connection_cls`` to ``aioredis.create_redis``, which
    authenticates through the class's ``auth``.
    """
    from aioredis.connection import RedisConnection
    from aioredis.util import wait_ok

    class UserConnection(RedisConnection):
        def auth(self, password):
            return wait_ok(self.execute("AUTH", username, password))

    UserConnection.__name__ = UserConnection.__qualname__ = f"UserConnection[{username}]"
    return UserConnection


def sentinel_kwargs(host, asyncio_client):
    """The options of the connections to the sentinels of a sentinel host dict, for redis-py's
    ``Sentinel``: the host's (password, timeouts) and no retries. redis-py retries a command that
    timed out three times with backoff; one sentinel cut off would then hold up every lookup of the
    master for many seconds, where the next sentinel in the list answers at once."""
    from redis.backoff import NoBackoff

    if asyncio_client:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry
    return {**(host.get("sentinel_kwargs") or {}), "retry": Retry(NoBackoff(), 0)}


def has_redis_sentinel():
    """Whether channels-redis and the history can reach Redis through Sentinel.

    channels-redis >= 4 takes sentinel hosts and depends on redis-py, whose ``redis.sentinel``
    and ``redis.asyncio.sentinel`` the history uses. The legacy profile (channels-redis 2,
    aioredis 1) has neither.
    """
    import channels_redis

    if int(channels_redis.__version__.split(".")[0]) < 4:
        return False
    try:
        return importlib.util.find_spec("redis.asyncio.sentinel") is not None
    except ImportError:  # no redis package at all
        return False


def has_redis_pubsub_layer():
    """Whether channels-redis ships the pub/sub layer (channels-redis >= 3.3)."""
    return importlib.util.find_spec("channels_redis.pubsub") is not None
