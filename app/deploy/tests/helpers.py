"""Helpers for tests that run the project's processes."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
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


@contextlib.contextmanager
def redis_server(data_dir, config=""):
    """Run a redis-server on a free loopback port with ``config`` (redis.conf lines) added; yield
    the port once it answers, stop it after. Fails (``REQUIRE_LIVE=1``) or skips without Redis."""
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("REQUIRE_LIVE") == "1":
            pytest.fail("REQUIRE_LIVE=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    conf = Path(data_dir) / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\nsave ""\nappendonly no\ndir {data_dir}\n{config}\n'
    )
    log_path = Path(data_dir) / "redis.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([server, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start: " + log_path.read_text())
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
