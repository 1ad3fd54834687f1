"""Fixtures of the cluster checks: the hosts of each group (from molecule's inventory) as testinfra hosts, and what
the checks need to know of them. Every check runs once, from the controller."""

import json
import os
import subprocess
import sys

import pytest
import testinfra
import yaml

sys.path.insert(0, os.path.dirname(__file__))

from helpers import LOAD_SERVICES, grant  # noqa: E402

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.fixture(scope="session")
def groups():
    """{group: [host, ...]} of molecule's inventory."""
    local = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    command = local if os.path.exists(local) else "ansible-inventory"
    listing = json.loads(subprocess.check_output([command, "-i", INVENTORY, "--list"], text=True))
    return {name: entry.get("hosts", []) for name, entry in listing.items() if isinstance(entry, dict)}


def connect(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="session")
def lb(groups):
    return connect(groups["lb"][0])


@pytest.fixture(scope="session")
def apps(groups):
    """{inventory name: testinfra host} of the web (= app) hosts, the balancer's servers."""
    return {name: connect(name) for name in groups["web"]}


@pytest.fixture(scope="session")
def redis(groups):
    return connect(groups["redis"][0])


@pytest.fixture(scope="session")
def redis_hosts(groups):
    """{inventory name: testinfra host} of the Redis hosts (the first is the initial master)."""
    return {name: connect(name) for name in groups["redis"]}


@pytest.fixture(scope="session")
def settings(lb):
    """The balancer's values, templated by Ansible with the lb host's inventory and group_vars."""
    names = [
        "haproxy_listen_port",
        "haproxy_check_interval",
        "haproxy_check_timeout",
        "haproxy_check_fall",
        "haproxy_check_rise",
        "haproxy_health_host",
        "haproxy_tunnel_timeout",
        "devops_websocket_timeout",
        "devops_user",
    ]
    # Role defaults are not inventory variables: each name falls back to the role's own default.
    with open(os.path.join(PROJECT, "roles", "haproxy", "defaults", "main.yml")) as defaults_file:
        defaults = yaml.safe_load(defaults_file)
    fallback = {name: f" | default({json.dumps(defaults[name])})" if name in defaults else "" for name in names}
    expression = ", ".join(f"{name!r}: {name}{fallback[name]}" for name in names)
    result = lb.ansible("ansible.builtin.debug", "msg={{ {" + expression + "} | to_json }}", check=False)
    return json.loads(result["msg"]) if isinstance(result["msg"], str) else result["msg"]


@pytest.fixture(scope="session")
def lb_address(lb):
    """The balancer's address on the cluster network."""
    return lb.check_output("hostname -I").split()[0]


@pytest.fixture(scope="session")
def site(apps, lb_address, settings):
    """What the load tool needs: the balancer's URL, the site's name, the push token (from an app host's env) and a
    grant for its services."""
    first = apps[sorted(apps)[0]]
    env = first.check_output("cat /etc/devops/devops.env")
    token = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("DEPLOY_PUSH_TOKEN="))
    return {
        "url": f"http://{lb_address}:{settings['haproxy_listen_port']}",
        "host": settings["haproxy_health_host"],
        "token": token.strip().strip("'\""),
        # Its clients only listen: a grant that may read. Each reconnect offers it again, so it outlasts the scenario.
        "grant": grant(apps, settings, LOAD_SERVICES, "--seconds", "14400"),
    }
