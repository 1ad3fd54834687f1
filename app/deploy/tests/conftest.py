import copy

import pytest
from channels.testing import WebsocketCommunicator

from deploy.history import get_history
from deploy.tests.helpers import grant_protocols
from devops.asgi import application

#: Seconds any single receive may take before the test fails.
TIMEOUT = 5
#: The headers of a page of the site opening a websocket: its origin, and the Host it connects to.
SITE_HEADERS = ((b"origin", b"http://localhost"), (b"host", b"localhost"))


@pytest.fixture(autouse=True)
def fresh_channel_layer(settings):
    """Give every test a new channel layer: channels drops its layers when the setting changes."""
    settings.CHANNEL_LAYERS = copy.deepcopy(settings.CHANNEL_LAYERS)


@pytest.fixture
async def connect():
    """Open websocket connections to ``/ws/deploy/<service>/`` through the full ASGI stack.

    ``await connect("tasks")`` returns an accepted communicator; all are disconnected afterwards.
    It offers a grant for the service that may send (``write=False``: one that may only read).
    ``query`` is the URL's query string. With the history on, the ``hello`` frame is read and
    kept as ``communicator.hello`` unless ``hello=False``; it is None with the history off.
    """
    opened = []

    async def open_connection(service, headers=SITE_HEADERS, query="", hello=True, write=True):
        path = f"/ws/deploy/{service}/" + (f"?{query}" if query else "")
        protocols = grant_protocols(service, write=write)
        communicator = WebsocketCommunicator(
            application, path, headers=list(headers), subprotocols=protocols
        )
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        communicator.hello = None
        if hello and get_history() is not None:
            communicator.hello = await communicator.receive_json_from(timeout=TIMEOUT)
            assert communicator.hello["type"] == "hello", communicator.hello
        return communicator

    yield open_connection
    for communicator in opened:
        await communicator.disconnect()
