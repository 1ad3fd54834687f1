"""Websocket routes."""

from deploy.compat import as_asgi
from deploy.consumers import DeployConsumer
from devops.compat import re_path

# Anything under ws/deploy/ reaches the consumer, which closes with 4400 on a bad service name
# (a route that did not match would fail the handshake with no reason given).
websocket_urlpatterns = [
    re_path(r"^ws/deploy/(?P<service>.*)/$", as_asgi(DeployConsumer)),
]
