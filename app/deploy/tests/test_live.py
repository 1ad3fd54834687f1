"""End to end: real redis-server, daphne and uwsgi processes on 127.0.0.1.

Skipped when redis-server is not installed, unless REQUIRE_LIVE=1 (as in CI), which turns the
skip into a failure. Every wait is bounded, so a broken server fails a test instead of hanging.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed

from deploy import history
from deploy.protocol import FRAME_OVERHEAD
from deploy.push import send_channel_msg
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import APP_DIR, free_port, grant_protocols, manage, needs_history
from devops.env import channel_layers

pytestmark = pytest.mark.live

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_PASSWORD = "live/pass@word"  # URL-special characters: exercises the quoting
PUSH_TOKEN = "live-push-token"
LIVE_NODE = "live-node"
START_TIMEOUT = 30


class Server:
    """A child process whose output goes to a log file, quoted when it fails to start."""

    def __init__(self, name, args, log_dir, env=None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                args, cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_until(self, ready):
        """Poll ``ready()`` until it is true; fail with the log if the process dies or is slow."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{self.name} did not start within {START_TIMEOUT} s:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def venv_script(name):
    """A console script installed next to this Python."""
    return str(Path(sys.executable).with_name(name))


def http(method, url, body=None, headers=None):
    """``(status, body)`` of one HTTP request, error statuses included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_ok(url):
    return http("GET", url)[0] == 200


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if not os.access(REDIS_SERVER, os.X_OK):
        reason = f"{REDIS_SERVER} is not installed (apt-get install redis-server)"
        if os.environ.get("REQUIRE_LIVE") == "1":
            pytest.fail(f"REQUIRE_LIVE=1 but {reason}")
        pytest.skip(reason)
    port = free_port()
    data_dir = tmp_path_factory.mktemp("redis")
    args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"]
    args += ["--dir", str(data_dir)]
    server = Server("redis", args, data_dir)

    def ping():
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            password = REDIS_PASSWORD.encode()
            sock.sendall(
                b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password)
            )
            reply = b""
            while not reply.endswith(b"+PONG\r\n") and len(reply) < 100:
                chunk = sock.recv(100)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"

    server.wait_until(ping)
    yield f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture(scope="session")
def live_env(redis_url, tmp_path_factory):
    """Environment of the app's processes: Redis layer, plain HTTP, push endpoint on."""
    return {
        **os.environ,
        "CHANNEL_LAYER": "redis",
        "REDIS_URL": redis_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_HTTPS": "false",
        "DJANGO_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "DEPLOY_PUSH_TOKEN": PUSH_TOKEN,
        "DEPLOY_NODE": LIVE_NODE,
    }


def run_daphne(name, options, live_env, tmp_path_factory):
    """Start daphne with ``options`` on a free port of 127.0.0.1; yield its ``host:port``."""
    port = free_port()
    # The console script: daphne 2 (legacy profile) cannot run as `python -m daphne`.
    args = [venv_script("daphne"), "-b", "127.0.0.1", "-p", str(port), *options]
    args.append("devops.asgi:application")
    server = Server(name, args, tmp_path_factory.mktemp(name), env=live_env)
    server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def daphne(live_env, tmp_path_factory):
    """Base URL ``127.0.0.1:<port>`` of a running daphne serving ``devops.asgi:application``."""
    yield from run_daphne("daphne", [], live_env, tmp_path_factory)


@pytest.fixture(scope="session")
def limited_daphne(live_env, tmp_path_factory):
    """A daphne that refuses websocket messages over the app's maximum, as the asgi role runs it."""
    limit_option = "--websocket-max-message-size"
    usage = subprocess.run([venv_script("daphne"), "--help"], capture_output=True, text=True)
    if limit_option not in usage.stdout:
        pytest.skip(f"this daphne has no {limit_option} (before 4.2.2: the legacy profile)")
    limit = settings.DEPLOY_MAX_MESSAGE_BYTES + FRAME_OVERHEAD  # as the asgi role sets it
    yield from run_daphne("limited-daphne", [limit_option, str(limit)], live_env, tmp_path_factory)


@pytest.fixture(scope="session")
def uwsgi(live_env, tmp_path_factory):
    """Base URL of a running uwsgi (from pyuwsgi) serving ``devops.wsgi:application``."""
    port = free_port()
    args = [venv_script("uwsgi"), "--http-socket", f"127.0.0.1:{port}"]
    args += ["--module", "devops.wsgi:application", "--pythonpath", str(APP_DIR)]
    args += ["--master", "--processes", "1", "--need-app", "--die-on-term"]
    server = Server("uwsgi", args, tmp_path_factory.mktemp("uwsgi"), env=live_env)
    server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def redis_layer(settings, redis_url):
    """Point this test process's channel layer at the live Redis, as ops code would be."""
    settings.CHANNEL_LAYERS = channel_layers("redis", redis_url, group_expiry=86400, capacity=100)


@pytest.fixture
def service():
    return f"live-{uuid.uuid4().hex[:12]}"


#: The hello frame of each client that open_client opened.
hellos = {}


@pytest.fixture
async def open_client(daphne):
    """``await open_client(service)``: a websocket client of daphne, closed after the test.

    With the history on, the client's ``hello`` frame has been read: ``hellos[client]``.
    """
    clients = []

    async def open_one(service, query=""):
        client = await websocket_connect(
            f"ws://{daphne}/ws/deploy/{service}/" + (f"?{query}" if query else ""),
            origin=f"http://{daphne}",
            subprotocols=grant_protocols(service),
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        )
        clients.append(client)
        if history.AVAILABLE:  # the processes run with the default DEPLOY_HISTORY_LENGTH
            hellos[client] = await receive(client)
            assert hellos[client]["type"] == "hello", hellos[client]
        return client

    yield open_one
    for client in clients:
        await client.close()
        hellos.pop(client, None)


async def receive(client):
    return json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))


async def send(client, message):
    await client.send(json.dumps({"message": message}))


async def assert_all_receive(clients, message, source):
    for client in clients:
        frame = await receive(client)
        assert (frame["message"], frame["source"]) == (message, source)


def post_push(base_url, service, message):
    return http(
        "POST",
        f"http://{base_url}/api/push/{service}/",
        json.dumps({"message": message}).encode(),
        {"Authorization": f"Bearer {PUSH_TOKEN}", "Content-Type": "application/json"},
    )


async def test_two_clients_receive_a_third_clients_message(open_client, service):
    first, second, sender = [await open_client(service) for _ in range(3)]
    await send(sender, "hello from the third")
    await assert_all_receive([first, second, sender], "hello from the third", "client")


@pytest.mark.usefixtures("redis_layer")
async def test_send_channel_msg_reaches_daphne_clients(open_client, service):
    clients = [await open_client(service) for _ in range(2)]
    await asyncio.to_thread(send_channel_msg, service, "from the test process")
    await assert_all_receive(clients, "from the test process", "push")


async def test_manage_push_reaches_daphne_clients(open_client, service, live_env):
    clients = [await open_client(service) for _ in range(2)]
    result = await asyncio.to_thread(manage, "push", service, "from manage.py", env=live_env)
    assert result.returncode == 0, result.stderr
    await assert_all_receive(clients, "from manage.py", "push")


async def test_http_push_through_daphne(open_client, service, daphne):
    clients = [await open_client(service) for _ in range(2)]
    status, body = await asyncio.to_thread(post_push, daphne, service, "over daphne http")
    assert status == 202, body
    await assert_all_receive(clients, "over daphne http", "push")


async def test_http_push_through_uwsgi_reaches_daphne_clients(open_client, service, uwsgi):
    clients = [await open_client(service) for _ in range(2)]
    status, body = await asyncio.to_thread(post_push, uwsgi, service, "over uwsgi")
    assert status == 202, body
    await assert_all_receive(clients, "over uwsgi", "push")


async def test_bad_frame_gets_error_and_others_keep_working(open_client, service):
    sender, other = await open_client(service), await open_client(service)
    await sender.send("not json")
    assert (await receive(sender))["type"] == "error"
    await sender.send(b"\x00binary")
    assert (await receive(sender))["type"] == "error"
    await send(sender, "after the errors")
    # Had a bad frame reached the group, `other` would see it before this message.
    await assert_all_receive([sender, other], "after the errors", "client")


async def test_a_message_over_the_limit_is_refused_by_daphne_itself_when_limited(
    daphne, limited_daphne, service
):
    too_big = json.dumps({"message": "x" * (settings.DEPLOY_MAX_MESSAGE_BYTES + FRAME_OVERHEAD)})

    async def answer(base):
        async with websocket_connect(
            f"ws://{base}/ws/deploy/{service}/",
            origin=f"http://{base}",
            subprotocols=grant_protocols(service),
            open_timeout=TIMEOUT,
        ) as client:
            if history.AVAILABLE:
                await receive(client)  # hello
            await client.send(too_big)
            try:
                return await receive(client)
            except ConnectionClosed as closed:
                return closed

    # Without the limit daphne buffers the whole message and hands it to the app, which refuses it.
    unlimited = await answer(daphne)
    assert unlimited["type"] == "error", unlimited
    # With it, daphne drops the connection once the message grows over the limit (no close frame).
    closed = await answer(limited_daphne)
    assert isinstance(closed, ConnectionClosed) and closed.rcvd is None, closed


@pytest.mark.usefixtures("redis_layer")
async def test_the_largest_message_reaches_a_client_of_a_limited_daphne(limited_daphne, service):
    # daphne's limit holds for the frames it sends as well: the largest message the app accepts, in
    # characters that JSON escapes or that take several bytes, with the longest service name.
    service = (service + "-" * 64)[:64]
    unit = 'é"\n'  # 2 + 2 + 2 bytes as sent
    message = unit * (settings.DEPLOY_MAX_MESSAGE_BYTES // 6)
    async with websocket_connect(
        f"ws://{limited_daphne}/ws/deploy/{service}/",
        origin=f"http://{limited_daphne}",
        subprotocols=grant_protocols(service),
        open_timeout=TIMEOUT,
        max_size=None,
    ) as client:
        if history.AVAILABLE:
            await receive(client)  # hello
        await asyncio.to_thread(send_channel_msg, service, message)
        frame = await receive(client)
    assert frame["message"] == message


@pytest.mark.usefixtures("redis_layer")
async def test_other_service_receives_nothing(open_client, service):
    mine, theirs = await open_client(service), await open_client(f"{service}-other")
    await send(mine, "only for mine")
    # Its echo first: the frame travels through daphne while a push from here goes straight to the
    # layer, so the push could overtake it.
    await assert_all_receive([mine], "only for mine", "client")
    await asyncio.to_thread(send_channel_msg, service, "pushed to mine")
    await asyncio.to_thread(send_channel_msg, f"{service}-other", "marker")
    await assert_all_receive([mine], "pushed to mine", "push")
    # Everything for `mine` was sent before the marker: the marker must come first.
    frame = await receive(theirs)
    assert (frame["message"], frame["seq"]) == ("marker", 1)


async def test_invalid_service_closes_with_4400(daphne):
    async with websocket_connect(
        f"ws://{daphne}/ws/deploy/bad%20name/", origin=f"http://{daphne}", open_timeout=TIMEOUT
    ) as client:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), TIMEOUT)
    assert closed.value.rcvd.code == 4400


@pytest.mark.usefixtures("redis_layer")
async def test_reconnect_rounds_keep_receiving(open_client, service):
    for round_number in range(10):
        client = await open_client(service)
        await asyncio.to_thread(send_channel_msg, service, f"round {round_number}")
        frame = await receive(client)
        assert (frame["message"], frame["seq"]) == (f"round {round_number}", 1)
        await client.close()


def test_healthz_through_daphne_twenty_times(daphne):
    for _ in range(20):
        status, body = http("GET", f"http://{daphne}/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_uwsgi_serves_page_and_readyz(uwsgi):
    status, body = http("GET", f"http://{uwsgi}/")
    assert status == 200
    assert b'data-service="tasks"' in body
    status, body = http("GET", f"http://{uwsgi}/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"] == {"database": "ok", "channel_layer": "ok"}


@needs_history
@pytest.mark.usefixtures("redis_layer")
async def test_resume_through_daphne_replays_from_redis(open_client, service):
    client = await open_client(service)
    await asyncio.to_thread(send_channel_msg, service, "seen")
    seen = await receive(client)
    await client.close()
    for message in ("missed 1", "missed 2"):
        await asyncio.to_thread(send_channel_msg, service, message)
    back = await open_client(service, f"after={seen['id']}&epoch={seen['epoch']}")
    assert hellos[back]["epoch"] == seen["epoch"]
    replayed = [await receive(back) for _ in range(2)]
    assert [(f["message"], f["replay"]) for f in replayed] == [
        ("missed 1", True),
        ("missed 2", True),
    ]
    assert await receive(back) == {"type": "resumed", "replayed": 2}


async def test_manage_drain_closes_daphne_websockets_with_4012(open_client, service, live_env):
    clients = [await open_client(service) for _ in range(2)]
    result = await asyncio.to_thread(manage, "drain_websockets", "--node", LIVE_NODE, env=live_env)
    assert result.returncode == 0, result.stderr
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert closed.value.rcvd.code == 4012
