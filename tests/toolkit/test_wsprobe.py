"""playbooks/files/wsprobe.py against a local server that answers the handshake and then ends the connection the
two ways a websocket server does: a close frame, or a reset while the client is still sending."""

import base64
import hashlib
import importlib.util
import json
import socket
import struct
import threading
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[2] / "playbooks" / "files" / "wsprobe.py"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def load_probe():
    spec = importlib.util.spec_from_file_location("wsprobe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def handshake(conn, requests=None):
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    if requests is not None:
        requests.append(request)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


@pytest.fixture
def server():
    """A one-connection server; the test gives it what to do after the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    behaviour = {"requests": []}

    def serve():
        conn, _ = listener.accept()
        handshake(conn, behaviour["requests"])
        behaviour["after"](conn)

    thread = threading.Thread(target=serve, daemon=True)
    yield listener.getsockname()[1], behaviour, thread
    thread.join(timeout=10)
    listener.close()


def reset_mid_frame(conn):
    conn.recv(1024)  # a part of the client's frame; the rest stays unread, so closing sends a reset
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_frame(conn):
    received, whole = b"", 2 + 4 + len(json.dumps({"message": "hello"}))  # header, mask key, payload
    while len(received) < whole:
        received += conn.recv(1024)
    conn.sendall(bytes([0x88, 2 + 7]) + struct.pack("!H", 1009) + b"too big")
    conn.close()


@pytest.mark.parametrize(
    "after, message, code",
    [(reset_mid_frame, "x" * 4_000_000, None), (close_frame, "hello", 1009)],
    ids=["reset mid message", "close frame"],
)
def test_a_server_ending_the_connection_is_reported_as_closed(server, capsys, after, message, code):
    port, behaviour, thread = server
    behaviour["after"] = after
    thread.start()
    rc = load_probe().main(["send", f"ws://127.0.0.1:{port}/ws/", message, "--timeout", "10"])
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rc == 3, out
    assert out["closed"] == code


def test_a_server_that_never_answers_the_message_is_a_failure_not_a_close(server, capsys):
    port, behaviour, thread = server
    behaviour["after"] = lambda conn: (conn.recv(1024), threading.Event().wait(3), conn.close())
    thread.start()
    rc = load_probe().main(["send", f"ws://127.0.0.1:{port}/ws/", "hello", "--timeout", "1"])
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rc == 1 and "timeout" in out["error"].lower(), out


@pytest.mark.parametrize("how", ["option", "environment", "none"])
def test_a_grant_is_offered_as_a_subprotocol(server, capsys, monkeypatch, how):
    port, behaviour, thread = server
    behaviour["after"] = close_frame
    thread.start()
    args = ["send", f"ws://127.0.0.1:{port}/ws/", "hello", "--timeout", "10"]
    monkeypatch.delenv("WSPROBE_GRANT", raising=False)
    if how == "option":
        args += ["--grant", "abc.DEF-1_x"]
    elif how == "environment":
        monkeypatch.setenv("WSPROBE_GRANT", "abc.DEF-1_x")
    load_probe().main(args)
    capsys.readouterr()
    headers = [line.lower() for line in behaviour["requests"][0].split(b"\r\n")]
    offered = [line for line in headers if line.startswith(b"sec-websocket-protocol:")]
    expected = [] if how == "none" else [b"sec-websocket-protocol: deploy, grant.abc.def-1_x"]
    assert offered == expected
