"""The project's own Redis user against a redis-server of its own, with the ACL rules the toolkit
gives it (``devops_redis_project_commands`` in inventory/group_vars/all.yml, on the keys and
channels of the project's prefix): both channel layers and the history work as that user, and
what an intruder in the app would want (configuration, flushing, listing keys, another project's
keys and channels) is refused. The default user, which the app used before, may do all of it.
"""

import asyncio

import pytest
import redis
import yaml
from django.utils.module_loading import import_string

from deploy.tests.helpers import APP_DIR, modern_only, needs_history, redis_server
from devops.env import Env, channel_layers

pytestmark = [modern_only, pytest.mark.live]

GROUP_VARS = APP_DIR.parent / "inventory" / "group_vars" / "all.yml"
PREFIX = "chat"
PASSWORD = "chat-user-password-0123456789"
ADMIN_PASSWORD = "admin-password-0123456789"

#: What the project's user must not do: read or change the configuration, wipe or list the
#: data, touch another project's keys or channels, watch or kill other clients, stop Redis.
REFUSED = [
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1mb"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("SET", "other:key", "x"),
    ("GET", "other:key"),
    ("PUBLISH", "other.channel", "x"),
    ("ACL", "LIST"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("MONITOR",),
    ("REPLICAOF", "NO", "ONE"),
    ("SCRIPT", "FLUSH"),
    ("SHUTDOWN", "NOSAVE"),
]


def project_user_rules():
    """The ``user`` line the redis role writes for project ``PREFIX``."""
    commands = yaml.safe_load(GROUP_VARS.read_text())["devops_redis_project_commands"]
    assert "{" not in commands, "the rules are plain text, no template"
    return f"user {PREFIX} on >{PASSWORD} resetchannels &{PREFIX}* resetkeys ~{PREFIX}* {commands}"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    config = f'requirepass "{ADMIN_PASSWORD}"\n{project_user_rules()}\n'
    with redis_server(tmp_path_factory.mktemp("acl"), config) as port:
        yield port


def env(port, **extra):
    return Env({"REDIS_PORT": str(port), "REDIS_PASSWORD": PASSWORD, **extra})


def layer(port, kind, prefix=PREFIX):
    """A channel layer of ``kind`` as the settings build it, logged in as the project's user."""
    config = channel_layers(kind, env(port, REDIS_USERNAME=PREFIX).redis(), 60, 10, prefix=prefix)
    return import_string(config["default"]["BACKEND"])(**config["default"]["CONFIG"])


@pytest.mark.parametrize("kind", ["redis", "redis-pubsub"])
def test_the_channel_layers_work_as_the_project_user(port, kind):
    async def round_trip():
        channel_layer = layer(port, kind)
        try:
            channel = await channel_layer.new_channel()
            await channel_layer.send(channel, {"type": "direct"})
            assert (await asyncio.wait_for(channel_layer.receive(channel), 5))["type"] == "direct"
            await channel_layer.group_add("deploy.web", channel)
            await channel_layer.group_send("deploy.web", {"type": "to.group"})
            assert (await asyncio.wait_for(channel_layer.receive(channel), 5))["type"] == "to.group"
            await channel_layer.group_discard("deploy.web", channel)
        finally:
            if kind == "redis":
                await channel_layer.close_pools()
            else:
                await channel_layer.flush()

    asyncio.run(round_trip())


@needs_history
def test_the_history_works_as_the_project_user(port):
    from deploy.history_redis import RedisHistory

    history = RedisHistory(env(port, REDIS_USERNAME=PREFIX).redis(), PREFIX)
    published = history.publish_sync("web", "deployed", "test", "1")
    history.close()

    async def read():
        try:
            return await history.read("web", (0, 0))
        finally:
            await history.aclose()

    assert [entry.id for entry in asyncio.run(read()).entries] == [published.id]
    client = redis.Redis(port=port, username=PREFIX, password=PASSWORD)
    assert client.execute_command("WAIT", 0, 10) == 0  # what a push waits for replicas with
    client.close()


@pytest.mark.parametrize("command", REFUSED, ids=" ".join)
def test_the_project_user_may_not(port, command):
    client = redis.Redis(port=port, username=PREFIX, password=PASSWORD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    client.close()


def test_a_layer_with_another_prefix_is_refused(port):
    """The key patterns are what keeps projects apart: the same user with another prefix fails."""

    async def send():
        channel_layer = layer(port, "redis", prefix="other")
        try:
            await channel_layer.send("specific.x!y", {"type": "x"})
        finally:
            await channel_layer.close_pools()

    with pytest.raises(redis.exceptions.NoPermissionError):
        asyncio.run(send())


#: Left out of the default user's run: what would stop this Redis, block the client or fail
#: later commands.
DISRUPTIVE = {"SHUTDOWN", "REPLICAOF", "CLIENT", "MONITOR", "CONFIG SET"}


@pytest.mark.parametrize(
    "command",
    [c for c in REFUSED if c[0] not in DISRUPTIVE and " ".join(c[:2]) not in DISRUPTIVE],
    ids=" ".join,
)
def test_the_default_user_may(port, command):
    """Without the project's user (the app logged in as the default user before) all of it runs."""
    client = redis.Redis(port=port, password=ADMIN_PASSWORD, db=1)
    client.execute_command(*command)
    client.close()
