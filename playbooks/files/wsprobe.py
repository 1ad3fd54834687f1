#!/usr/bin/env python3
"""A dependency-free websocket probe for smoke checks and tests on deployed hosts.

    wsprobe.py roundtrip URL [--timeout S]          send a unique message, expect it back (exit 0; an error frame
                                                    instead: exit 4)
    wsprobe.py listen URL --count N [--timeout S]   print N received frames as JSON lines (not hello/resumed/gap)
    wsprobe.py send URL MESSAGE                     send one message and wait for its echo
    wsprobe.py flood URL --count N [--timeout S]    send N messages at once, then read until the server
                                                    closes (exit 3) or the timeout (exit 0, {"sent": N})

Frames are JSON objects {"message": "..."}; --field names another key.

A grant (the bundled app's `<user>-manage grant SERVICE`, for reading, `--write` for sending) is offered
as the subprotocols "deploy, grant.<token>": --grant TOKEN, or the environment variable WSPROBE_GRANT (not
shown by ps).

URL is ws://host[:port]/path (TLS via wss:// with the system CAs, or --insecure; --unix PATH talks
to a unix socket, such as one daphne process's, instead of TCP). Standard library only, so it runs
with any host's /usr/bin/python3.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import struct
import sys
import time
import uuid
from urllib.parse import urlsplit


class Closed(Exception):
    """The server closed the connection (args: close code, reason)."""


class Refused(Exception):
    """The server answered a sent message with an error frame (args: its error)."""


# A server that ends a connection while the client is still sending (a frame over its size limit) may reset it
# before the client reads the close frame: the client sees a reset, and it is the same answer.
# (Over TLS: the connection ends without TLS's own close, an SSLEOFError.)
RESET = (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)


class WebSocket:
    def __init__(self, url, timeout, origin=None, insecure=False, unix=None, host=None, grant=None):
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        self.deadline = time.monotonic() + timeout
        if unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(unix)
        else:
            sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if secure:
            context = ssl.create_default_context()
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        self.sock = sock
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        host = host or parts.netloc.rsplit("@", 1)[-1]
        origin = origin or "{}://{}".format("https" if secure else "http", host)
        protocols = f"Sec-WebSocket-Protocol: deploy, grant.{grant}\r\n" if grant else ""
        request = (
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nOrigin: {}\r\n{}\r\n".format(
                parts.path or "/", host, key, origin, protocols
            )
        )
        sock.sendall(request.encode())
        head = self._read_until(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise Closed(None, "handshake refused: {}".format(status.decode(errors="replace")))

    def _recv(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline reached")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except RESET as exc:
            raise Closed(None, f"connection reset by the server ({type(exc).__name__})") from exc
        if not data:
            raise Closed(None, "connection closed without a close frame")
        self.buffer += data

    def _read_until(self, marker):
        while marker not in self.buffer:
            self._recv()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exact(self, size):
        while len(self.buffer) < size:
            self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send_text(self, text, opcode=0x1):
        payload = text.encode() if isinstance(text, str) else text
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        try:
            self.sock.sendall(header + mask + masked)
        except RESET as exc:
            raise Closed(None, f"connection reset by the server ({type(exc).__name__})") from exc

    def recv_text(self):
        """Return the next text frame; answer pings; raise Closed on a close frame."""
        while True:
            first, second = self._read_exact(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._read_exact(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._read_exact(8))[0]
            payload = self._read_exact(size)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode == 0x9:
                self.send_text(payload, opcode=0xA)
            elif opcode == 0x1:
                return payload.decode()

    def close(self):
        try:
            self.send_text(struct.pack("!H", 1000), opcode=0x8)
        except (OSError, Closed):
            pass
        self.sock.close()


# Frames of the resume protocol (docs/architecture.md) that carry no message: listen does not count them.
CONTROL_FRAMES = {"hello", "resumed", "gap"}


def is_control(text):
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") in CONTROL_FRAMES


def wait_for(ws, message, field="message"):
    """Read frames until the one whose `field` is `message`; return it as a dict. `Refused` on an error frame."""
    while True:
        frame = json.loads(ws.recv_text())
        if frame.get(field) == message:
            return frame
        if frame.get("type") == "error":
            raise Refused(frame.get("error"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["roundtrip", "listen", "send", "flood"])
    parser.add_argument("url")
    parser.add_argument("message", nargs="?")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--origin")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--unix", metavar="PATH", help="connect to this unix socket (a daphne's) instead of TCP")
    parser.add_argument("--ready-file", help="listen: create this file once connected")
    parser.add_argument("--host", help="the Host header (and origin), when the URL names an address")
    parser.add_argument("--field", default="message", help='the frame key: {"<field>": "..."}')
    parser.add_argument("--grant", default=os.environ.get("WSPROBE_GRANT"), help="offer this grant (the app's)")
    args = parser.parse_args(argv)
    try:
        ws = WebSocket(args.url, args.timeout, args.origin, args.insecure, args.unix, args.host, args.grant)
        if args.command == "flood":
            for n in range(args.count):
                ws.send_text(json.dumps({args.field: f"flood-{n}"}))
            try:
                while True:
                    ws.recv_text()
            except socket.timeout:
                print(json.dumps({"sent": args.count}), flush=True)
        elif args.command == "listen":
            if args.ready_file:
                open(args.ready_file, "w").close()
            printed = 0
            while printed < args.count:
                text = ws.recv_text()
                if is_control(text):
                    continue
                print(text, flush=True)
                printed += 1
        else:
            message = args.message or f"probe-{uuid.uuid4().hex}"
            started = time.monotonic()
            ws.send_text(json.dumps({args.field: message}))
            frame = wait_for(ws, message, args.field)
            frame["roundtrip_ms"] = round((time.monotonic() - started) * 1000, 1)
            print(json.dumps(frame), flush=True)
        ws.close()
    except Closed as exc:
        print(json.dumps({"closed": exc.args[0], "reason": exc.args[1]}), flush=True)
        return 3
    except Refused as exc:
        print(json.dumps({"refused": exc.args[0]}), flush=True)
        return 4
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
