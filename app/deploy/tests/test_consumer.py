"""The websocket consumer through the full ASGI stack (origin check, grant, routing)."""

import json
import logging
from datetime import datetime

import channels.consumer
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from deploy.consumers import INVALID_SERVICE, TOO_MANY_BAD_FRAMES, TOO_MANY_FRAMES, FrameBudget
from deploy.push import send_channel_msg
from deploy.tests.conftest import SITE_HEADERS, TIMEOUT
from devops.asgi import application


async def push(service, message):
    await sync_to_async(send_channel_msg)(service, message)


async def receive(communicator):
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def test_client_receives_pushed_message(connect):
    client = await connect("tasks")
    await push("tasks", "deploy started")
    frame = await receive(client)
    ts = frame.pop("ts")
    assert datetime.fromisoformat(ts).utcoffset().total_seconds() == 0
    # With the history on the frame also has "id", "epoch" and "prev": see test_resume.py.
    frame.pop("id", None)
    frame.pop("epoch", None)
    frame.pop("prev", None)
    assert frame == {
        "type": "message",
        "service": "tasks",
        "message": "deploy started",
        "seq": 1,
        "source": "push",
    }


async def test_client_message_reaches_every_client_including_sender(connect):
    sender, other = await connect("tasks"), await connect("tasks")
    await sender.send_json_to({"message": "hello"})
    for client in (sender, other):
        frame = await receive(client)
        assert (frame["message"], frame["source"], frame["service"]) == ("hello", "client", "tasks")


async def test_services_are_isolated(connect):
    alpha, beta = await connect("alpha"), await connect("beta")
    await alpha.send_json_to({"message": "for alpha"})
    assert (await receive(alpha))["message"] == "for alpha"
    await push("alpha", "pushed to alpha")
    assert (await receive(alpha))["message"] == "pushed to alpha"
    assert await beta.receive_nothing(timeout=0.2)


async def test_seq_counts_messages_per_connection(connect):
    first = await connect("tasks")
    await push("tasks", "one")
    await push("tasks", "two")
    second = await connect("tasks")
    await push("tasks", "three")
    assert [(await receive(first))["seq"] for _ in range(3)] == [1, 2, 3]
    frame = await receive(second)
    assert (frame["message"], frame["seq"]) == ("three", 1)


async def test_legacy_deploy_run_event_is_delivered(connect):
    """The blog post's helper sends {"type": "deploy.run", "text": ...} to the group."""
    client = await connect("tasks")
    await get_channel_layer().group_send("deploy.tasks", {"type": "deploy.run", "text": "old"})
    frame = await receive(client)
    assert (frame["message"], frame["source"], frame["seq"]) == ("old", "push", 1)


BAD_FRAMES = [
    pytest.param({"text": "not json"}, "not valid JSON", id="non-json"),
    pytest.param({"text": ""}, "not valid JSON", id="empty-frame"),
    pytest.param({"text": "[1, 2]"}, "JSON object", id="array"),
    pytest.param({"text": '"hello"'}, "JSON object", id="string"),
    pytest.param({"text": '{"text": "hello"}'}, 'no "message"', id="no-message"),
    pytest.param({"text": '{"message": 42}'}, "must be a string", id="number"),
    pytest.param({"text": '{"message": null}'}, "must be a string", id="null"),
    pytest.param({"text": '{"message": ""}'}, "empty", id="empty-message"),
    pytest.param({"bytes": b'{"message": "hi"}'}, "binary frames", id="binary"),
    pytest.param({"text": json.dumps({"message": "x" * 100})}, "the limit is 64", id="oversize"),
    pytest.param({"text": '{"message": "\\ud800"}'}, "lone surrogate", id="lone-surrogate"),
]


@pytest.mark.parametrize("frame, error", BAD_FRAMES)
async def test_bad_frame_gets_error_and_reaches_nobody(connect, settings, caplog, frame, error):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 64
    sender, other = await connect("tasks"), await connect("tasks")
    with caplog.at_level(logging.WARNING, logger="deploy"):
        await sender.send_input({"type": "websocket.receive", **frame})
        reply = await receive(sender)
    assert reply["type"] == "error"
    assert error in reply["error"]
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "refused frame" in caplog.records[0].getMessage()
    assert await other.receive_nothing(timeout=0.1)
    # The connection stays open and works.
    await sender.send_json_to({"message": "still here"})
    for client in (sender, other):
        assert (await receive(client))["message"] == "still here"


async def test_deeply_nested_frame_gets_error_and_the_connection_stays(connect):
    sender, other = await connect("tasks"), await connect("tasks")
    await sender.send_to(text_data="[" * 30000)
    reply = await receive(sender)
    assert reply == {"type": "error", "error": "JSON is nested too deeply"}
    assert await other.receive_nothing(timeout=0.1)
    await sender.send_json_to({"message": "still here"})
    for client in (sender, other):
        assert (await receive(client))["message"] == "still here"


@pytest.mark.parametrize("service", ["has%20space", "x" * 65, "", "a/b", "t%C3%A2che"])
async def test_invalid_service_is_accepted_then_closed_with_4400(service):
    path = f"/ws/deploy/{service}/"
    communicator = WebsocketCommunicator(application, path, headers=list(SITE_HEADERS))
    assert await communicator.connect(timeout=TIMEOUT) == (True, None)
    assert await communicator.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": INVALID_SERVICE,
    }
    # A frame sent before the close reached the client is dropped without an error.
    await communicator.send_json_to({"message": "late"})
    assert await communicator.receive_nothing(timeout=0.1)
    await communicator.disconnect()


def handshake(origin=None, host="localhost", forwarded_proto=None):
    """The headers of a websocket handshake."""
    headers = [(b"host", host.encode())] if host else []
    headers += [(b"origin", origin.encode())] if origin else []
    return headers + ([(b"x-forwarded-proto", forwarded_proto.encode())] if forwarded_proto else [])


@pytest.mark.parametrize(
    "headers",
    [
        handshake("http://evil.example"),
        handshake(),
        # Allowed host names, but another port or scheme than the site's: another server's page.
        handshake("http://localhost:9999"),
        handshake("https://localhost"),
        handshake("http://localhost", host=None),  # no Host: nothing to compare with
    ],
)
async def test_disallowed_or_missing_origin_is_rejected(headers):
    communicator = WebsocketCommunicator(application, "/ws/deploy/tasks/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected
    await communicator.disconnect()


@pytest.mark.parametrize(
    "headers",
    [
        handshake("http://localhost:8080", host="localhost:8080"),
        handshake("https://localhost", forwarded_proto="https"),  # TLS ends at nginx
        handshake("https://deploy.example.org"),  # trusted
    ],
)
async def test_the_sites_own_or_a_trusted_origin_is_accepted(headers, settings):
    settings.WEBSOCKET_TRUSTED_ORIGINS = ["https://deploy.example.org"]
    communicator = WebsocketCommunicator(application, "/ws/deploy/tasks/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    await communicator.disconnect()


async def test_disconnected_client_leaves_the_group(connect):
    client = await connect("tasks")
    await client.disconnect()
    layer = get_channel_layer()
    assert "deploy.tasks" not in layer.groups or not layer.groups["deploy.tasks"]


async def test_a_delivery_does_not_close_database_connections_in_a_thread(connect, monkeypatch):
    """channels >= 4.2 closes old database connections before each handler; not this consumer."""
    if not hasattr(channels.consumer, "aclose_old_connections"):
        pytest.skip("channels < 4.2 does not close connections per message")
    calls = []

    async def counting():
        calls.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    client = await connect("tasks")
    await get_channel_layer().group_send("deploy.tasks", {"type": "deploy.run", "text": "hop"})
    assert (await receive(client))["message"] == "hop"
    assert calls == []
    # Channels' own dispatch does call it: the check above would see it.
    consumer = channels.consumer.AsyncConsumer()

    async def handler(message):
        pass

    consumer.deploy_run = handler
    await channels.consumer.AsyncConsumer.dispatch(consumer, {"type": "deploy.run"})
    assert calls == [1]


# --- abuse limits -------------------------------------------------------------------------------


async def next_close(communicator):
    """The close code the server sends next, after any frames before it."""
    while True:
        output = await communicator.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            return output.get("code")


async def test_a_client_over_the_frame_rate_is_closed_with_4429_and_the_others_keep_it(
    connect, settings
):
    settings.DEPLOY_CLIENT_FRAMES_PER_SECOND = 5
    settings.DEPLOY_CLIENT_FRAME_BURST = 5
    flooder, other = await connect("tasks"), await connect("tasks")
    for n in range(6):  # at once: the burst, and one more
        await flooder.send_json_to({"message": f"flood {n}"})
    assert await next_close(flooder) == TOO_MANY_FRAMES
    # The burst reached the service's clients; the frame over it reached nobody.
    assert [(await receive(other))["message"] for _ in range(5)] == [f"flood {n}" for n in range(5)]
    assert await other.receive_nothing(timeout=0.2)
    await push("tasks", "still served")
    assert (await receive(other))["message"] == "still served"


async def test_without_the_frame_rate_limit_a_flood_is_broadcast(connect, settings):
    settings.DEPLOY_CLIENT_FRAMES_PER_SECOND = 0  # the unprotected case: all of it reaches everyone
    flooder, other = await connect("tasks"), await connect("tasks")
    for n in range(60):
        await flooder.send_json_to({"message": f"flood {n}"})
    assert [(await receive(other))["message"] for _ in range(60)] == [
        f"flood {n}" for n in range(60)
    ]


async def test_the_frame_budget_refills_at_its_rate():
    now = [0.0]
    budget = FrameBudget(rate=2, burst=3, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one frame's worth
    assert [budget.take() for _ in range(2)] == [True, False]
    now[0] += 60  # never more than the burst
    assert [budget.take() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(("limit", "closed"), [(3, True), (0, False)])
async def test_a_client_sending_bad_frames_is_closed_after_the_limit(
    connect, settings, limit, closed
):
    settings.DEPLOY_CLIENT_BAD_FRAMES = limit
    client = await connect("tasks")
    for _ in range(3):
        await client.send_to(text_data="not json")
        assert (await receive(client))["type"] == "error"
    if closed:
        assert await next_close(client) == TOO_MANY_BAD_FRAMES
    else:  # no limit: the connection still works after any number of bad frames
        await client.send_json_to({"message": "after the errors"})
        assert (await receive(client))["message"] == "after the errors"
