"""The app's own Redis user on the deployed stack (inventory/group_vars/all.yml, "Redis users"): the app's processes
log in as it, it is refused administration and keys outside its prefix while a websocket client is served, and the
default user keeps administration. The app's own tests (app/deploy/tests/test_redis_acl.py) run the channel layers and
the history as that user and show the default user allowed everything the project's user is refused.
"""

import shlex

from helpers import grant_for, listen_and_push

#: What the project's user is refused: the configuration, wiping or listing the data, another project's keys.
REFUSED = [
    ["CONFIG", "GET", "maxmemory"],
    ["FLUSHALL"],
    ["KEYS", "*"],
    ["SET", "someone-else:key", "x"],
]


def env_values(host, layout):
    """KEY=value lines of the app's environment file (values shell-quoted)."""
    lines = host.file(layout["env_file"]).content_string.splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key: "".join(shlex.split(value)) for key, value in pairs}


def redis_cli(env, user, password, *command):
    """A redis-cli command line that logs in as `user` to the app's Redis (the password in the environment)."""
    return " ".join(
        [
            f"REDISCLI_AUTH={shlex.quote(password)} redis-cli --no-auth-warning -h {env['REDIS_HOST']}",
            f"-p {env['REDIS_PORT']} --user {shlex.quote(user)}",
            *map(shlex.quote, command),
        ]
    )


def admin_password(host):
    line = next(
        line
        for line in host.file("/etc/redis/redis.conf").content_string.splitlines()
        if line.startswith("requirepass ")
    )
    return shlex.split(line)[1]


def test_the_app_logs_in_as_its_own_user_which_is_refused_administration_while_a_client_is_served(
    host, layout, service
):
    env = env_values(host, layout)
    assert env["REDIS_USERNAME"] == layout["project"]
    refused = [redis_cli(env, env["REDIS_USERNAME"], env["REDIS_PASSWORD"], *command) for command in REFUSED]
    admin = redis_cli(env, "default", admin_password(host), "CLIENT", "LIST")
    results, received = listen_and_push(host, layout, service, grant_for(host, layout, service), *refused, admin)
    for command, result in zip(REFUSED, results):
        assert "NOPERM" in result.stdout + result.stderr, (command, result.stdout, result.stderr)
    assert [frame["message"] for frame in received] == ["served"]
    # While the client listened: every connection but the administrator's own CLIENT LIST is a project's user.
    clients = [
        dict(item.split("=", 1) for item in line.split() if "=" in item) for line in results[-1].stdout.splitlines()
    ]
    users = {client["user"] for client in clients if not client.get("cmd", "").startswith("client")}
    assert layout["project"] in users and "default" not in users, results[-1].stdout
    # The refusals are the user's: the default user (administration) may.
    assert host.check_output(redis_cli(env, "default", admin_password(host), "CONFIG", "GET", "maxmemory"))
