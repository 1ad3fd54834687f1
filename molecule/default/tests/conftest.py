"""Fixtures of the stack's testinfra checks; the helpers are in helpers.py."""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import read_layout  # noqa: E402


@pytest.fixture
def service():
    """A fresh service name, so tests never see each other's messages."""
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
