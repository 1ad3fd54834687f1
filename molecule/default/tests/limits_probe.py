"""Run inside a host (standard library only) as one client of nginx, from the address given, to try its per-client
limits; prints one JSON object.

    limits_probe.py requests ADDRESS PATH COUNT [TOKEN]   COUNT POSTs on one keep-alive connection: statuses
    limits_probe.py handshakes ADDRESS PATH COUNT         COUNT websocket handshakes, 8 at a time: statuses
    limits_probe.py hold ADDRESS PATH COUNT WAIT          open COUNT websockets (retrying refused handshakes), one
                                                          from 127.0.0.1, wait WAIT s, then one more handshake;
                                                          close one, and another
    limits_probe.py idle ADDRESS PATH COUNT WAIT READY    open COUNT websockets that never read (a 4 KiB receive
                                                          buffer), touch READY, hold them WAIT s

Websockets offer the grant in the environment variable LIMITS_PROBE_GRANT (the app's `manage.py grant`).
"""

import base64
import collections
import concurrent.futures
import http.client
import json
import os
import socket
import sys
import time


def handshake(address, path, receive_buffer=0):
    """Open a websocket from `address` to nginx on it; returns (status, the socket or None)."""
    sock = socket.socket()
    if receive_buffer:  # before connecting: the window the client offers follows it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((address, 80))
    key = base64.b64encode(os.urandom(16)).decode()
    grant = os.environ.get("LIMITS_PROBE_GRANT")
    protocols = f"Sec-WebSocket-Protocol: deploy, grant.{grant}\r\n" if grant else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n{protocols}\r\n".encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if status != 101:
        sock.close()
        return status, None
    return status, sock


def requests(address, path, count, token=""):
    statuses, started = collections.Counter(), time.monotonic()
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    headers = {"Host": "localhost", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for n in range(count):
        conn.request("POST", path, body=json.dumps({"message": f"limits-{n}"}), headers=headers)
        response = conn.getresponse()
        response.read()
        statuses[response.status] += 1
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(address, 80, timeout=10)
    return {"statuses": statuses, "seconds": time.monotonic() - started}


def handshakes(address, path, count):
    def one(_):
        status, sock = handshake(address, path)
        if sock:
            sock.close()
        return status

    # Eight at a time: faster than any handshake rate worth testing, even where the app accepts slowly.
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = collections.Counter(pool.map(one, range(count)))
    return {"statuses": statuses, "seconds": time.monotonic() - started}


def hold(address, path, count, wait):
    opened, refused, deadline = [], 0, time.monotonic() + 120
    while len(opened) < count and time.monotonic() < deadline:
        status, sock = handshake(address, path)
        if sock:
            opened.append(sock)
        else:
            refused += 1
            time.sleep(0.1)
    result = {"opened": len(opened), "refused_while_opening": refused}
    # Another client, meanwhile: its own budget.
    result["other_client"], sock = handshake("127.0.0.1", path)
    opened.extend([sock] if sock else [])
    time.sleep(wait)  # the handshake budget refills: a refusal now is the connection limit's
    result["over_the_limit"], sock = handshake(address, path)
    opened.pop(0).close()
    opened.extend([sock] if sock else [])
    time.sleep(0.5)
    result["after_closing_one"], sock = handshake(address, path)
    opened.extend([sock] if sock else [])
    for sock in opened:
        sock.close()
    return result


def idle(address, path, count, wait, ready):
    opened = [sock for status, sock in (handshake(address, path, 4096) for _ in range(count)) if sock]
    with open(ready, "w"):
        pass
    time.sleep(wait)
    for sock in opened:
        sock.close()
    return {"opened": len(opened)}


if __name__ == "__main__":
    command, address, path, count, *rest = sys.argv[1:]
    if command == "requests":
        result = requests(address, path, int(count), *rest)
    elif command == "handshakes":
        result = handshakes(address, path, int(count))
    elif command == "idle":
        result = idle(address, path, int(count), float(rest[0]), rest[1])
    else:
        result = hold(address, path, int(count), float(rest[0]))
    print(json.dumps(result))
