"""Read and validate the environment variables of ``devops.settings``.

Every bad value raises ``ImproperlyConfigured`` naming the variable and what was expected, so a
process with a broken environment refuses to start with one clear line instead of misbehaving.
"""

import re
from urllib.parse import quote, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from devops import compat

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CHANNEL_LAYER_KINDS = ("redis", "redis-pubsub", "memory")
ACCESS_MODES = ("grant", "open")
#: Services named at once (grants, DEPLOY_CLIENT_WRITE_SERVICES): a name of 1-64 of
#: A-Z a-z 0-9 _ . - (deploy.protocol), or a pattern of the same characters and ``*``.
SERVICE_PATTERN = re.compile(r"[A-Za-z0-9_.*-]{1,64}")


class Env:
    """Typed access to an environment mapping (``os.environ`` in settings, a dict in tests)."""

    def __init__(self, environ):
        self.environ = environ

    def string(self, name, default=""):
        return self.environ.get(name, default)

    def boolean(self, name, default):
        raw = self.environ.get(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        expected = "/".join(TRUE_WORDS + FALSE_WORDS)
        raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of {expected}")

    def integer(self, name, default, minimum=0):
        raw = self.environ.get(name)
        if raw is None:
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
        return value

    def csv(self, name, default=""):
        """A comma separated list; blanks around items and empty items are dropped."""
        raw = self.environ.get(name, default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def patterns(self, name, default=""):
        """A comma separated list of service names or patterns with ``*`` (``SERVICE_PATTERN``)."""
        patterns = self.csv(name, default)
        for pattern in patterns:
            if not SERVICE_PATTERN.fullmatch(pattern):
                raise ImproperlyConfigured(
                    f"{name}: {pattern!r} is not a service name or pattern: "
                    "use 1-64 of A-Z a-z 0-9 _ . - *"
                )
        return patterns

    def choice(self, name, default, choices, normalize=str.lower):
        value = normalize(self.environ.get(name, default).strip())
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def log_level(self, name, default="INFO"):
        return self.choice(name, default, LOG_LEVELS, normalize=str.upper)

    def redis_url(self):
        """``REDIS_URL`` if set (validated), else a URL built from ``REDIS_HOST`` and friends."""
        url = self.environ.get("REDIS_URL", "").strip()
        if url:
            check_redis_url(url)
            return url
        host = self.string("REDIS_HOST", "127.0.0.1").strip()
        port = self.integer("REDIS_PORT", 6379, minimum=1)
        db = self.integer("REDIS_DB", 0)
        username = self.string("REDIS_USERNAME").strip()
        password = self.string("REDIS_PASSWORD")
        auth = ""
        if username or password:
            auth = f"{quote(username, safe='')}:{quote(password, safe='')}@"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return f"redis://{auth}{host}:{port}/{db}"

    def redis_sentinels(self):
        """``[(host, port), ...]`` of ``REDIS_SENTINELS`` ("host:port,..."); ``[]`` when unset.

        Refused together with ``REDIS_URL`` or ``REDIS_HOST``: the sentinels name the master.
        """
        raw = self.environ.get("REDIS_SENTINELS", "").strip()
        if not raw:
            return []
        for name, value in (
            ("REDIS_URL", self.environ.get("REDIS_URL", "")),
            ("REDIS_HOST", self.environ.get("REDIS_HOST", "")),
        ):
            if value.strip():
                raise ImproperlyConfigured(
                    f"{name} and REDIS_SENTINELS are both set: with sentinels the master is the one"
                    f" they name; unset {name}"
                )
        return [parse_sentinel(item.strip()) for item in raw.split(",") if item.strip()]

    def redis(self):
        """Where the app's Redis is: a URL (``redis_url``), or with ``REDIS_SENTINELS`` a dict.

        The dict is channels-redis' sentinel host: ``{"sentinels": [(host, port), ...],
        "master_name", "sentinel_kwargs": {"password"}, "username", "password", "db"}``;
        ``username``, ``password`` and ``db`` (``REDIS_USERNAME``, ``REDIS_PASSWORD``,
        ``REDIS_DB``) are the data nodes'.
        """
        sentinels = self.redis_sentinels()
        if not sentinels:
            return self.redis_url()
        return sentinel_host(
            sentinels,
            self.string("REDIS_SENTINEL_MASTER", "devops").strip(),
            self.string("REDIS_SENTINEL_PASSWORD"),
            self.string("REDIS_PASSWORD"),
            self.integer("REDIS_DB", 0),
            username=self.string("REDIS_USERNAME").strip(),
        )


def parse_sentinel(item):
    """``(host, port)`` of one ``REDIS_SENTINELS`` entry: ``host:port`` or ``[v6addr]:port``."""
    host, _, port = item.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or " " in host:
        raise ImproperlyConfigured(
            f"REDIS_SENTINELS entry {item!r} is invalid:"
            " expected host:port ([address]:port for IPv6)"
        )
    return host, int(port)


#: Seconds a sentinel may take to accept a connection or answer: redis-py asks the sentinels in
#: turn, and without a timeout one that is cut off (a partitioned host) would hang every lookup of
#: the master instead of letting the next sentinel answer.
SENTINEL_TIMEOUT = 1.0


def sentinel_host(sentinels, master_name, sentinel_password, password, db, username=""):
    """channels-redis' sentinel host dict (also what ``deploy.history_redis`` connects with)."""
    if not master_name:
        raise ImproperlyConfigured("REDIS_SENTINEL_MASTER must not be empty with REDIS_SENTINELS")
    return {
        "sentinels": list(sentinels),
        "master_name": master_name,
        "sentinel_kwargs": {
            "password": sentinel_password or None,
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        },
        "username": username or None,
        "password": password or None,
        "db": db,
    }


def check_redis_url(url):
    """Raise ``ImproperlyConfigured`` unless ``url`` is a usable ``redis://``/``rediss://`` URL."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing the port validates it
        port_ok = True
    except ValueError:
        port_ok = False
    db = parts.path.lstrip("/")
    if parts.scheme not in ("redis", "rediss"):
        problem = "the scheme must be redis:// or rediss://"
    elif not parts.hostname:
        problem = "it names no host"
    elif not port_ok:
        problem = "the port is not a number"
    elif db and not db.isdigit():
        problem = "the path must be the database number"
    else:
        return
    raise ImproperlyConfigured(f"REDIS_URL is invalid: {problem}")


def database_from_url(url):
    """Turn ``DATABASE_URL`` into a ``DATABASES['default']`` dict.

    Accepts ``sqlite:///abs/path`` and ``postgres://user:password@host:port/name``
    (``postgresql://`` too); user and password may be percent-encoded.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///abs/path, also written sqlite:////abs/path.
        path = url[len("sqlite:///") :].lstrip("/")
        if not url.startswith("sqlite:///") or not path:
            raise ImproperlyConfigured(
                f"DATABASE_URL={url!r}: a SQLite URL needs an absolute path, sqlite:///abs/path"
            )
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": "/" + path}
    if parts.scheme in ("postgres", "postgresql"):
        # The messages leave the URL out: it holds the password.
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(
                "DATABASE_URL is invalid: the port is not a number"
            ) from None
        name = unquote(parts.path.lstrip("/"))
        if not (parts.hostname and name):
            raise ImproperlyConfigured(
                "DATABASE_URL is invalid: use postgres://user:password@host:port/name"
            )
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname,
            "PORT": str(port or ""),
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported; use sqlite:/// or postgres://"
    )


#: Seconds the core layer's BZPOPMIN blocks (``RedisChannelLayer.brpop_timeout``).
CORE_LAYER_BLOCKING_READ = 5
#: Options of the core layer's connection pools (channels-redis >= 4, redis-py). redis-py's
#: default socket timeout (5 s) equals the layer's 5 s blocking read, so an idle consumer's read
#: timed out and killed it (channels_redis #422): reads get twice as long plus a margin.
CORE_LAYER_POOL_OPTIONS = {
    "socket_timeout": 2 * CORE_LAYER_BLOCKING_READ + 5,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 30,
}


def pubsub_layer_pool_options():
    """Options of the pub/sub layer's connections (channels-redis >= 4, redis-py): a command that
    finds its connection closed reconnects (to the master the sentinels name now) and runs once
    more. The layer's subscription connection goes unread while no consumer of the process is
    subscribed; when Redis closed it meanwhile (a restart, a failover) redis-py's default, no
    retry, failed the next ``SUBSCRIBE`` and with it the next websocket handshake of each ASGI
    process (HTTP 500)."""
    import redis

    return {"retry_on_error": [redis.ConnectionError]}


def channel_layers(kind, redis, group_expiry, capacity, prefix="asgi", max_connections=1000):
    """Build ``CHANNEL_LAYERS`` for ``CHANNEL_LAYER`` = redis, redis-pubsub or memory.

    ``redis`` is a URL or a sentinel host dict (``Env.redis``). ``prefix`` names the Redis keys
    and channels: projects sharing a Redis stay apart. ``max_connections`` bounds each of the core
    layer's connection pools (one per event loop; redis-py's default, 100, is too few for a
    process serving hundreds of websockets).
    """
    if kind == "memory":
        config = {"group_expiry": group_expiry, "capacity": capacity}
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": config}}
    if kind == "redis-pubsub":
        if not compat.has_redis_pubsub_layer():
            raise ImproperlyConfigured(
                "CHANNEL_LAYER=redis-pubsub needs channels-redis >= 3.3; use CHANNEL_LAYER=redis"
            )
        # The pub/sub layer keeps no queues and no group expiry: only hosts and prefix apply.
        hosts = compat.channel_layer_hosts(redis, pubsub_layer_pool_options())
        return {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": hosts, "prefix": prefix},
            }
        }
    options = {**CORE_LAYER_POOL_OPTIONS, "max_connections": max_connections}
    hosts = compat.channel_layer_hosts(redis, options)
    config = {"hosts": hosts, "prefix": prefix, "group_expiry": group_expiry, "capacity": capacity}
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}}


def logging_config(level):
    """Everything to stderr at ``level``, one line per record."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
            },
        },
        "root": {"handlers": ["stderr"], "level": level},
        # Django's default config gives "django" its own console handler; hand it to the root.
        "loggers": {"django": {"handlers": [], "level": level, "propagate": True}},
    }
