"""Helpers for tests that run the project's processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import django
import pytest

from deploy import grants, history

APP_DIR = Path(__file__).resolve().parents[2]

#: For tests of what only the modern profile does; the rest also pass on the legacy profile.
modern_only = pytest.mark.skipif(
    django.VERSION < (4, 2), reason="checks the modern profile (Django 5.2, channels 4)"
)


def grant_protocols(service, write=True, seconds=60):
    """The subprotocols a client offers with a fresh grant for ``service`` (``deploy.grants``)."""
    return [grants.SUBPROTOCOL, grants.GRANT_PREFIX + grants.issue(service, write, seconds)]


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(*args, env=None, input=None, timeout=60):
    """Run ``python manage.py ARGS`` in a child process with the test environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=APP_DIR,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: For tests of the message history, which the legacy profile does not have.
needs_history = pytest.mark.skipif(
    not history.AVAILABLE, reason="the history needs redis-py's asyncio client (modern profile)"
)
