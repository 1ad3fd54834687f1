"""ASGI entry point of the release (``asgi_application``).

Django is set up first, then the project's application is imported: a project whose ``asgi.py``
imports its routing (and so its models) before ``get_asgi_application()`` fails with
``AppRegistryNotReady`` under a plain server, and works here. The application is
``DEVOPS_ASGI_APPLICATION`` (``module:attribute``), else the ``ASGI_APPLICATION`` setting.

channels-redis' pub/sub layer gets a capacity per channel, ``CHANNELS_CAPACITY`` as the core layer has
(``devops_toolkit.layers``).
"""

import os

import asgiref
import django
from django.core.exceptions import ImproperlyConfigured

django.setup(set_prefix=False)

from devops_toolkit import health, layers, target  # noqa: E402 - after django.setup()

_capacity = os.environ.get("CHANNELS_CAPACITY", "100").strip()
if not _capacity.isdigit() or int(_capacity) < 1:
    raise ImproperlyConfigured(f"CHANNELS_CAPACITY={_capacity!r} must be a whole number, at least 1")
layers.bound_pubsub_queues(int(_capacity))

project_application = target.load("DEVOPS_ASGI_APPLICATION", "ASGI_APPLICATION")


async def _answer_health(send):
    await send({"type": "http.response.start", "status": 200, "headers": health.HEADERS})
    await send({"type": "http.response.body", "body": health.BODY})


if not health.PATH:
    application = project_application
elif int(getattr(asgiref, "__version__", "2").split(".")[0]) >= 3:
    from asgiref.compatibility import guarantee_single_callable

    _inner = guarantee_single_callable(project_application)

    async def application(scope, receive, send):
        if scope["type"] == "http" and health.is_health_request(scope["path"]):
            await _answer_health(send)
        else:
            await _inner(scope, receive, send)

else:  # asgiref 2 (channels 2.1): servers speak the double-callable ASGI 2

    class _Health:
        def __init__(self, scope):
            self.scope = scope

        async def __call__(self, receive, send):
            await _answer_health(send)

    def application(scope):
        if scope["type"] == "http" and health.is_health_request(scope["path"]):
            return _Health(scope)
        return project_application(scope)
