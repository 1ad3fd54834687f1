"""Version shims of the deploy app: the running app's differences between dependency profiles.

The app supports two dependency profiles from one code base:

* modern: Django 5.2, channels 4, channels-redis 4 (redis-py), asgiref 3;
* legacy: Django 1.11, channels 2.1, channels-redis 2.3 (aioredis 1), asgiref 2, Python 3.9.

Everything else is written against what both profiles share and takes the differences from
here (ASGI application, channel layer calls, management commands) or, for what settings and
routes need, from ``devops.compat``, which imports no channels. Dropping
the legacy profile means deleting the fallback branches of both modules and nothing more.
"""

import importlib.util

import channels
import django
from asgiref.sync import async_to_sync
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from django.core.management.base import BaseCommand as _BaseCommand
from django.core.management.base import CommandError as _CommandError

__all__ = [
    "BaseCommand",
    "CommandError",
    "as_asgi",
    "call_layer_sync",
    "django_http_application",
    "has_redis_asyncio",
]


def as_asgi(consumer_class):
    """Return the ASGI application for a consumer class.

    channels >= 3 wants ``Consumer.as_asgi()``; channels 2 routes to the class itself.
    """
    if hasattr(consumer_class, "as_asgi"):
        return consumer_class.as_asgi()
    return consumer_class


def django_http_application():
    """Set Django up and return the ASGI application that serves its HTTP views."""
    try:
        from django.core.asgi import get_asgi_application  # Django >= 3.0
    except ImportError:  # Django < 3.0: channels 2 ships the HTTP handler.
        django.setup(set_prefix=False)
        from channels.http import AsgiHandler

        return AsgiHandler
    return get_asgi_application()


if django.VERSION >= (3, 1):
    BaseCommand = _BaseCommand
    CommandError = _CommandError
else:  # Django < 3.1 exits with status 1 on every CommandError.

    class CommandError(_CommandError):
        """``CommandError`` taking Django 3.1's ``returncode`` argument."""

        def __init__(self, *args, returncode=1, **kwargs):
            self.returncode = returncode
            super().__init__(*args, **kwargs)

    class BaseCommand(_BaseCommand):
        """``BaseCommand`` whose command line exits with the error's ``returncode``."""

        _returncode = 1

        def execute(self, *args, **options):
            try:
                return super().execute(*args, **options)
            except _CommandError as exc:
                self._returncode = getattr(exc, "returncode", 1)
                raise

        def run_from_argv(self, argv):
            try:
                super().run_from_argv(argv)
            except SystemExit as exc:
                if exc.code != 1:
                    raise
                raise SystemExit(self._returncode) from None


def call_layer_sync(operation):
    """Run ``operation(layer)``, a coroutine function, from synchronous code; return its result.

    ``async_to_sync`` runs every call in an event loop of its own. channels-redis >= 3 keeps its
    connections per loop, so the shared layer serves every call. channels-redis 2 binds them to the
    first loop that used the layer ("got Future attached to a different loop" on the next call from
    the same process, e.g. a uwsgi worker's second push): there each call gets a layer of its own.
    """
    if int(channels.__version__.split(".")[0]) >= 3:
        return async_to_sync(operation)(get_channel_layer())

    async def run_with_own_layer():
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        try:
            return await operation(layer)
        finally:
            close_pools = getattr(layer, "close_pools", None)
            if close_pools is not None:
                await close_pools()

    return async_to_sync(run_with_own_layer)()


def has_redis_asyncio():
    """Whether redis-py's asyncio client is importable (channels-redis >= 4 depends on redis-py).

    The message history (``deploy.history``) needs it: without it, as on the legacy profile whose
    channels-redis 2 uses aioredis 1, the history is off and the websocket frames carry no ids.
    """
    try:
        return importlib.util.find_spec("redis.asyncio") is not None
    except ImportError:  # no redis package at all
        return False
