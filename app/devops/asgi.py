"""ASGI entry point, served by daphne: ``daphne devops.asgi:application``.

HTTP goes to Django's views; websockets get the session user attached and are routed by
``devops.routing`` (the consumer checks their Origin: ``deploy.origin``).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "devops.settings")

from deploy.compat import django_http_application  # noqa: E402

# Set Django up before importing anything that touches models (the auth middleware does).
http_application = django_http_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from devops.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
