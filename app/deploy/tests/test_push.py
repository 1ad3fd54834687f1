"""``send_channel_msg`` and the ``push`` management command."""

import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from deploy.protocol import MessageTooLarge
from deploy.push import send_channel_msg
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import free_port, manage


@pytest.mark.parametrize(
    "service, message",
    [("bad name", "hi"), ("", "hi"), ("x" * 65, "hi"), ("tasks", ""), ("tasks", None)],
)
def test_send_channel_msg_rejects_bad_input(service, message):
    with pytest.raises(ValueError):
        send_channel_msg(service, message)


def test_send_channel_msg_rejects_oversize_message(settings):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 10
    with pytest.raises(MessageTooLarge):
        send_channel_msg("tasks", "x" * 11)


async def test_send_channel_msg_reaches_connected_clients(connect):
    client = await connect("tasks")
    await sync_to_async(send_channel_msg)("tasks", "from ops code")
    frame = await client.receive_json_from(timeout=TIMEOUT)
    assert (frame["message"], frame["source"]) == ("from ops code", "push")


async def test_push_command_delivers_argument(connect):
    client = await connect("tasks")
    out = io.StringIO()
    await sync_to_async(call_command)("push", "tasks", "release 1.2 live", stdout=out)
    assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "release 1.2 live"
    assert "pushed to tasks" in out.getvalue()


async def test_push_command_reads_stdin_for_dash(connect):
    client = await connect("tasks")
    stdin = io.StringIO("line one\nline two\n")
    await sync_to_async(call_command)("push", "tasks", "-", stdin=stdin, stdout=io.StringIO())
    frame = await client.receive_json_from(timeout=TIMEOUT)
    assert frame["message"] == "line one\nline two"


@pytest.mark.parametrize("service, message", [("bad name", "hi"), ("tasks", "")])
def test_push_command_bad_input_is_returncode_2(service, message):
    with pytest.raises(CommandError) as excinfo:
        call_command("push", service, message)
    assert excinfo.value.returncode == 2


def test_push_command_line_succeeds_with_stdin():
    result = manage("push", "tasks", "-", input="hello from a pipe\n")
    assert (result.returncode, result.stdout.strip()) == (0, "pushed to tasks")


@pytest.mark.parametrize(
    "args, env, error",
    [
        (["bad name", "hi"], {}, "invalid service name"),
        (["tasks", ""], {}, "message is empty"),
        (["tasks", "x" * 20], {"DEPLOY_MAX_MESSAGE_BYTES": "10"}, "the limit is 10"),
    ],
)
def test_push_command_line_bad_input_exits_2(args, env, error):
    result = manage("push", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr


def test_push_command_line_unreachable_layer_exits_1():
    env = {"CHANNEL_LAYER": "redis", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = manage("push", "tasks", "hi", env=env)
    assert result.returncode == 1, result.stderr
    assert "channel layer unreachable" in result.stderr
