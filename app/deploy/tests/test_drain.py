"""``manage.py drain_websockets`` and the consumer's node group."""

import io

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command

from deploy.consumers import DRAINING
from deploy.protocol import node_group
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import free_port, manage


async def drain(*args):
    out = io.StringIO()
    await sync_to_async(call_command)("drain_websockets", *args, stdout=out)
    return out.getvalue()


async def open_on_node(connect, settings, node, service="tasks"):
    settings.DEPLOY_NODE = node
    return await connect(service)


async def assert_closed_with_4012(communicator):
    output = await communicator.receive_output(timeout=TIMEOUT)
    assert output == {"type": "websocket.close", "code": DRAINING}


async def test_drain_closes_the_nodes_consumers_only(connect, settings):
    drained = [await open_on_node(connect, settings, "web-1", service) for service in "ab"]
    other = await open_on_node(connect, settings, "web-2")
    assert "deploy.node.web-1" in await drain("--node", "web-1")
    for communicator in drained:
        await assert_closed_with_4012(communicator)
    assert await other.receive_nothing(timeout=0.1)
    await other.send_json_to({"message": "still served"})
    assert (await other.receive_json_from(timeout=TIMEOUT))["message"] == "still served"


async def test_drain_defaults_to_this_node(connect, settings):
    communicator = await open_on_node(connect, settings, "this-node")
    await drain()
    await assert_closed_with_4012(communicator)


async def test_drained_consumer_leaves_both_groups(connect, settings):
    communicator = await open_on_node(connect, settings, "web-1")
    await drain("--node", "web-1")
    await assert_closed_with_4012(communicator)
    await communicator.disconnect()
    groups = get_channel_layer().groups
    assert not groups.get("deploy.node.web-1") and not groups.get("deploy.tasks")


async def test_host_name_is_the_default_node(connect, settings, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "host.example.org")
    communicator = await open_on_node(connect, settings, "")
    await drain("--node", "host.example.org")
    await assert_closed_with_4012(communicator)


@pytest.mark.parametrize(
    "node, group",
    [
        ("web-1", "deploy.node.web-1"),
        ("web 1/eu:2", "deploy.node.web-1-eu-2"),
        ("n" * 200, "deploy.node." + "n" * 87),
        ("", "deploy.node.-"),
    ],
)
def test_node_names_become_valid_group_names(node, group):
    assert node_group(node) == group
    layer = get_channel_layer()
    # channels >= 4 names the check require_valid_group_name; both raise TypeError when invalid.
    check = getattr(layer, "require_valid_group_name", None) or layer.valid_group_name
    assert check(group)


def test_drain_command_line_exits_0():
    result = manage("drain_websockets", "--node", "web-1")
    assert (result.returncode, result.stdout.strip()) == (0, "sent drain to deploy.node.web-1")


def test_drain_command_line_unreachable_layer_exits_1():
    env = {"CHANNEL_LAYER": "redis", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = manage("drain_websockets", env=env)
    assert result.returncode == 1, result.stderr
    assert "channel layer unreachable" in result.stderr
