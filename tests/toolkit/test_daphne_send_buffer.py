"""devops_toolkit.daphne's send-buffer limit against a live daphne: websocket clients that never read make an unlimited
daphne hold everything sent to them (the unprotected case); with the limit the application's sends to them wait, the
process stays small, a client that reads gets every message, and the ones that read nothing are disconnected by the
ping timeout."""

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "roles" / "app" / "files"
MESSAGE_BYTES, MESSAGES, IDLE_CLIENTS = 60_000, 150, 4
LIMIT = 1_048_576

# The application: on connect, sends ?n= messages of MESSAGE_BYTES at once (a burst of pushes), then waits. The
# pause lets daphne write the handshake's answer before the burst. ASGI 2's double callable: daphne 2 (the legacy
# profiles') runs it as it is, daphne 4 through asgiref's adapter.
APP = f"""
import asyncio

async def serve(scope, receive, send):
    assert scope["type"] == "websocket"
    await receive()
    await send({{"type": "websocket.accept"}})
    count = int(scope["query_string"].decode().partition("n=")[2] or 0)
    await asyncio.sleep(0.2)
    for i in range(count):
        await send({{"type": "websocket.send", "text": str(i % 10) * {MESSAGE_BYTES}}})
    while (await receive())["type"] != "websocket.disconnect":
        pass

def application(scope):
    return lambda receive, send: serve(scope, receive, send)
"""


@pytest.fixture
def serve(tmp_path):
    """Start daphne through the toolkit's module with extra arguments; yields (process, socket path, log path)."""
    processes = []

    def start(*arguments):
        (tmp_path / "slowapp.py").write_text(APP)
        sock, log = tmp_path / f"daphne{len(processes)}.sock", tmp_path / f"daphne{len(processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "devops_toolkit.daphne", *arguments, "-u", str(sock), "slowapp:application"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": f"{FILES}{os.pathsep}{tmp_path}"},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return process, sock, log

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def connect(sock, messages, receive_buffer=4096):
    """A websocket client on daphne's socket that asks for `messages` messages; returns it after the handshake."""
    client = socket.socket(socket.AF_UNIX)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.connect(str(sock))
    key = base64.b64encode(os.urandom(16)).decode()
    client.sendall(
        f"GET /ws/?n={messages} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        byte = client.recv(1)
        assert byte, f"connection closed during the handshake: {answer!r}"
        answer += byte
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return client


def read_all(client, timeout=30):
    """Bytes the client can read until the server ends the connection or nothing comes for `timeout` seconds."""
    client.settimeout(timeout)
    total = 0
    try:
        while chunk := client.recv(1 << 20):
            total += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return total


def rss(process):
    """Resident memory of the process, in bytes."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss(process, limit=30):
    """RSS once it stopped changing for a second (daphne wrote what it could and buffered the rest)."""
    last, stable_since, deadline = rss(process), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss(process)
        if abs(now - last) > 256 * 1024:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1:
            break
    return last


def burst(process, sock):
    """RSS growth while IDLE_CLIENTS clients that do not read are each sent MESSAGES messages; returns the growth
    and the idle clients."""
    connect(sock, 0).close()  # the first connection imports the application: not part of the growth
    before = settled_rss(process)
    idle = [connect(sock, MESSAGES) for _ in range(IDLE_CLIENTS)]
    return settled_rss(process) - before, idle


def test_without_a_limit_clients_that_do_not_read_make_daphne_hold_what_was_sent_to_them(serve):
    process, sock, _ = serve()
    growth, idle = burst(process, sock)
    sent = IDLE_CLIENTS * MESSAGES * MESSAGE_BYTES
    print(f"\nno limit: {IDLE_CLIENTS} clients not reading, {sent / 2**20:.0f} MiB sent: RSS +{growth / 2**20:.1f} MiB")
    assert growth > sent / 2, (growth, sent)
    # Nothing was dropped: a client that reads late still gets everything (frame headers aside).
    assert read_all(idle[0], timeout=5) >= MESSAGES * MESSAGE_BYTES


def test_with_the_limit_sends_wait_for_the_client_and_a_reader_gets_everything(serve):
    # As the asgi role orders them: daphne's --access-log before the module's --access-log-format.
    arguments = ["--access-log", "-", "--access-log-format", "json", "--send-buffer-limit", str(LIMIT)]
    process, sock, log = serve(*arguments, "--ping-interval", "1", "--ping-timeout", "2")
    growth, idle = burst(process, sock)
    burst_done = time.monotonic()
    sent = IDLE_CLIENTS * MESSAGES * MESSAGE_BYTES
    reader = connect(sock, MESSAGES)
    got = read_all(reader, timeout=3)
    for client in idle:
        read_all(client, timeout=15)  # what the kernel holds, then the end of the connection
    print(
        f"\nlimit {LIMIT} bytes: {IDLE_CLIENTS} clients not reading, {sent / 2**20:.0f} MiB sent: RSS "
        f"+{growth / 2**20:.1f} MiB; a reading client got {got / 2**20:.1f} MiB meanwhile; the others were "
        f"disconnected within {time.monotonic() - burst_done:.1f} s (ping interval 1 s, timeout 2 s)"
    )
    assert growth < IDLE_CLIENTS * 2 * LIMIT, growth
    assert got >= MESSAGES * MESSAGE_BYTES
    text = log.read_text()
    assert text.count(f"(limit {LIMIT}): sends to it wait") == IDLE_CLIENTS, text
    # The warm-up connection and the idle clients are gone; the access log is JSON (the other option).
    assert text.count('"action":"WSDISCONNECT"') >= 1 + IDLE_CLIENTS, text


def test_a_negative_limit_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "devops_toolkit.daphne", "--send-buffer-limit", "-1", "app:application"],
        env={**os.environ, "PYTHONPATH": str(FILES)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--send-buffer-limit must be 0" in result.stderr
