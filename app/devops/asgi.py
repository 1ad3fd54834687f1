"""ASGI entry point, served by daphne: ``daphne devops.asgi:application``.

HTTP goes to Django's views; websockets are routed by ``devops.routing``. The consumer checks their
Origin (``deploy.origin``) and their grant (``deploy.grants``): no session or user is attached to
them, the page asks for its grant over HTTP as the signed-in user.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "devops.settings")

from deploy.compat import django_http_application  # noqa: E402

# Set Django up before importing anything that touches models.
http_application = django_http_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from devops.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
