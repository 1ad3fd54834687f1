"""The settings overlay: the project's own settings, then what production needs, from the env.

``DJANGO_SETTINGS_MODULE=devops_toolkit.settings`` (``app_settings_overlay: true``) runs a project
whose settings are hard-coded for development. Every upper-case name of ``DEVOPS_PROJECT_SETTINGS`` (the
project's module) is copied, then these are set from the environment file that roles/app writes:

========================  =======================================================================
setting                   from
========================  =======================================================================
SECRET_KEY                DJANGO_SECRET_KEY (required)
DEBUG                     DJANGO_DEBUG (default false)
ALLOWED_HOSTS             DJANGO_ALLOWED_HOSTS (comma separated)
CSRF_TRUSTED_ORIGINS      the project's, plus DJANGO_CSRF_TRUSTED_ORIGINS
DATABASES['default']      DATABASE_URL, else SQLite at DJANGO_DATA_DIR/db.sqlite3
STATIC_ROOT               STATIC_ROOT (the release's static directory, set by bin/run)
CHANNEL_LAYERS            CHANNEL_LAYER and REDIS_URL (or REDIS_HOST/PORT/USERNAME/PASSWORD/DB),
                          CHANNELS_PREFIX, CHANNELS_GROUP_EXPIRY, CHANNELS_CAPACITY
proxy and TLS settings    DJANGO_HTTPS: SECURE_PROXY_SSL_HEADER, secure cookies, SSL redirect, HSTS
========================  =======================================================================

Anything else stays the project's. A bad value stops the process with ``ImproperlyConfigured``.
"""

import os
import re
from importlib import import_module
from urllib.parse import quote, unquote, urlsplit

import django
from django.core.exceptions import ImproperlyConfigured

_project = import_module(os.environ.get("DEVOPS_PROJECT_SETTINGS", ""))
globals().update((name, value) for name, value in vars(_project).items() if name.isupper())


def _get(name, default=""):
    return os.environ.get(name, default).strip()


def _flag(name, default):
    value = _get(name, default).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean")
    return value in ("true", "1", "yes")


def _number(name, default):
    value = _get(name, str(default))
    if not value.isdigit():
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number")
    return int(value)


def _words(name):
    return [word.strip() for word in _get(name).split(",") if word.strip()]


def _database(url):
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and url.startswith("sqlite:///"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": "/" + url[len("sqlite:///") :].lstrip("/")}
    if parts.scheme in ("postgres", "postgresql") and parts.hostname and parts.path.strip("/"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.strip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname,
            "PORT": str(parts.port or ""),
        }
    raise ImproperlyConfigured("DATABASE_URL must be sqlite:///abs/path or postgres://user:password@host:port/name")


def _redis_url():
    if _get("REDIS_URL"):
        return _get("REDIS_URL")
    username, password = _get("REDIS_USERNAME"), os.environ.get("REDIS_PASSWORD", "")
    auth = f"{quote(username, safe='')}:{quote(password, safe='')}@" if username or password else ""
    host = _get("REDIS_HOST", "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{host}:{_number('REDIS_PORT', 6379)}/{_number('REDIS_DB', 0)}"


def _pubsub_host(url):
    """The pub/sub layer's host: on channels-redis >= 4 (redis-py) a command that finds its connection
    closed reconnects and runs once more. The layer's subscription connection goes unread while no
    consumer of the process is subscribed; when Redis closed it meanwhile (a restart, a failover)
    redis-py's default, no retry, failed the next SUBSCRIBE and with it the next websocket handshake
    of each ASGI process."""
    import channels_redis

    if int(channels_redis.__version__.split(".")[0]) < 4:
        return url
    import redis

    return {"address": url, "retry_on_error": [redis.ConnectionError]}


def _core_host(url):
    """The core layer's host. channels-redis 2 hands the URL to aioredis 1, which knows only the password form of
    AUTH (Redis' default user): with a user name in the URL its connections log in as that user themselves."""
    username = unquote(urlsplit(url).username or "")
    import channels_redis

    if not username or int(channels_redis.__version__.split(".")[0]) >= 3:
        return url
    from aioredis.connection import RedisConnection
    from aioredis.util import wait_ok

    class UserConnection(RedisConnection):
        def auth(self, password):
            return wait_ok(self.execute("AUTH", username, password))

    return {"address": url, "connection_cls": UserConnection}


def _channel_layer(kind):
    expiry, capacity = _number("CHANNELS_GROUP_EXPIRY", 86400), _number("CHANNELS_CAPACITY", 100)
    prefix = _get("CHANNELS_PREFIX", "asgi")
    if kind == "memory":
        return {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"group_expiry": expiry}}
    # channels-redis >= 3 takes the URL as it is (percent-encoded password included).
    hosts = [_redis_url()]
    if kind == "redis-pubsub":
        return {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_pubsub_host(url) for url in hosts], "prefix": prefix},
        }
    if kind == "redis":
        hosts = [_core_host(url) for url in hosts]
        config = {"hosts": hosts, "prefix": prefix, "group_expiry": expiry, "capacity": capacity}
        return {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}
    raise ImproperlyConfigured(f"CHANNEL_LAYER={kind!r} is not one of redis, redis-pubsub, memory")


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set, at least 32 characters (app_secret_key)")
DEBUG = _flag("DJANGO_DEBUG", "false")
ALLOWED_HOSTS = _words("DJANGO_ALLOWED_HOSTS")

# Django >= 4.0 compares whole origins (scheme://host[:port]); older versions bare host names.
_origins = list(globals().get("CSRF_TRUSTED_ORIGINS", [])) + _words("DJANGO_CSRF_TRUSTED_ORIGINS")
if django.VERSION < (4, 0):
    _origins = [origin.split("://", 1)[-1] for origin in _origins]
CSRF_TRUSTED_ORIGINS = list(dict.fromkeys(_origins))

_data_dir = _get("DJANGO_DATA_DIR") or os.path.join(os.environ.get("HOME", "/tmp"), "data")
DATABASES = dict(globals().get("DATABASES", {}))
DATABASES["default"] = _database(_get("DATABASE_URL") or "sqlite:///" + os.path.join(_data_dir, "db.sqlite3"))

STATIC_ROOT = _get("STATIC_ROOT") or globals().get("STATIC_ROOT")
CHANNEL_LAYERS = {"default": _channel_layer(_get("CHANNEL_LAYER", "redis").lower())}

# TLS ends at nginx (or the balancer), which sets X-Forwarded-Proto; health probes use plain HTTP.
if _flag("DJANGO_HTTPS", "false"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    _health = os.environ.get("DEVOPS_HEALTH_PATH", "").lstrip("/")
    SECURE_REDIRECT_EXEMPT = [f"^{re.escape(_health)}$"] if _health else []
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _number("DJANGO_HSTS_SECONDS", 31536000)
