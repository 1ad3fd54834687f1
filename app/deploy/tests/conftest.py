import copy

import pytest
from channels.testing import WebsocketCommunicator

from devops.asgi import application

#: Seconds any single receive may take before the test fails.
TIMEOUT = 5
ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture(autouse=True)
def fresh_channel_layer(settings):
    """Give every test a new channel layer: channels drops its layers when the setting changes."""
    settings.CHANNEL_LAYERS = copy.deepcopy(settings.CHANNEL_LAYERS)


@pytest.fixture
async def connect():
    """Open websocket connections to ``/ws/deploy/<service>/`` through the full ASGI stack.

    ``await connect("tasks")`` returns an accepted communicator; all are disconnected afterwards.
    """
    opened = []

    async def open_connection(service, headers=(ORIGIN,)):
        communicator = WebsocketCommunicator(
            application, f"/ws/deploy/{service}/", headers=list(headers)
        )
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        return communicator

    yield open_connection
    for communicator in opened:
        await communicator.disconnect()
