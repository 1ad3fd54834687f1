"""Fixtures of the stack's testinfra checks; the helpers are in helpers.py."""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import grant_for, read_layout  # noqa: E402


@pytest.fixture
def service():
    """A fresh service name, so tests never see each other's messages (one of SERVICES)."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def layout(host):
    """The host's layout (user, directories, env file), ASGI server and profile, from its inventory."""
    return read_layout(host)


@pytest.fixture(scope="module")
def asgi_count(host, layout):
    """How many ASGI server processes supervisor runs."""
    status = host.check_output("supervisorctl status")
    return sum(1 for line in status.splitlines() if line.startswith(layout["program"] + ":"))


#: The services of the checks; the scenario's hosts let websocket clients send to them (app_client_write_services).
SERVICES = "t-*"


@pytest.fixture(scope="module")
def grant(host, layout):
    """A grant for the checks' services (SERVICES) that may send, from the host's app."""
    return grant_for(host, layout, SERVICES, "--write", "--seconds 7200")


@pytest.fixture(scope="module")
def wsprobe(grant):
    """The websocket probe offering the grant: ``{wsprobe} roundtrip URL``."""
    return f"WSPROBE_GRANT={grant} /usr/local/bin/wsprobe"
