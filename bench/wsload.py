"""Websocket fan-out load generator: C receivers on one service group, one sender pushing at rate R.

The sender sends `{"message": "b<step> <i> <unix time>"}` frames; whatever broadcasts them (the deployed
app, or bench/bare.py) puts the message into the frame each receiver gets, so a receiver reads the
send time from the body and the latency is receipt minus send on the same host clock.

Receivers live in `workers` processes (each its own event loop, uvloop when installed) and report, per
step, how many of the expected messages arrived, a latency histogram (0.1 ms buckets) and their own CPU
use, so a saturated generator shows instead of passing for a slow server. The websocket client is a
small asyncio.Protocol (stdlib only): no per-frame allocations beyond one regex match, so one process
can read far more frames per second than a general-purpose client library.

Against the deployed app every client offers a grant (`<user>-manage grant 'bench*' --write`) in its
handshake, as the subprotocols "deploy, grant.<token>"; a client the server closes (4403: no valid grant)
fails the configuration at the next step.
"""

import asyncio
import base64
import multiprocessing
import os
import re
import socket
import time
from collections import Counter

BODY = re.compile(rb"b(\d+) \d+ (\d+\.\d+)")
BUCKET = 10000  # histogram buckets per second of latency (0.1 ms)
MAX_BUCKET = 30 * BUCKET


class TargetFailed(RuntimeError):
    """The target refused the generator's clients or dropped them: the configuration fails, the run goes on."""


def event_loop():
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def mask(payload):
    key = os.urandom(4)
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return key + masked.to_bytes(len(payload), "big")


def frame(payload, opcode=0x1):
    """A masked client frame."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask(payload)


class Stats:
    """What one process's receivers saw during the current step."""

    def __init__(self):
        self.closed = Counter()  # close codes the server sent, over the whole run
        self.reset(-1)

    def reset(self, step):
        self.step, self.received, self.late, self.hist, self.last = step, 0, 0, {}, None


class Client(asyncio.Protocol):
    """One websocket connection: handshake (offering `grant`, if any), then count and time every message frame."""

    def __init__(self, host, path, stats, grant=None):
        protocols = f"Sec-WebSocket-Protocol: deploy, grant.{grant}\r\n" if grant else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n{protocols}\r\n"
        ).encode()
        self.stats = stats
        self.buffer = b""
        self.open = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self.request)

    def connection_lost(self, exc):
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def send_text(self, text):
        self.transport.write(frame(text.encode()))

    def close(self):
        """Send a close frame (code 1000) and drop the connection."""
        if not self.transport.is_closing():
            self.transport.write(frame(b"\x03\xe8", opcode=0x8))
            self.transport.close()

    def data_received(self, data):
        now = time.time()
        buf = self.buffer + data if self.buffer else data
        if not self.open.done():
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = buf
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                self.open.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                self.transport.close()
                return
            self.open.set_result(True)
            buf = rest
        pos, end_of_data, stats = 0, len(buf), self.stats
        while end_of_data - pos >= 2:
            size, start = buf[pos + 1] & 0x7F, pos + 2
            if size == 126:
                size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif size == 127:
                size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            end = start + size
            if end > end_of_data:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 0x1:
                match = BODY.search(buf, start, end)
                if match:
                    if int(match[1]) == stats.step:
                        stats.received += 1
                        stats.last = now - float(match[2])
                        bucket = min(int(stats.last * BUCKET), MAX_BUCKET)
                        stats.hist[bucket] = stats.hist.get(bucket, 0) + 1
                    else:
                        stats.late += 1
            elif opcode == 0x9:
                self.transport.write(frame(buf[start:end], opcode=0xA))
            elif opcode == 0x8:
                stats.closed[int.from_bytes(buf[start : start + 2], "big") if size >= 2 else 1005] += 1
                self.transport.close()
            pos = end
        self.buffer = buf[pos:]


async def connect_all(address, host, path, count, stats, grant=None):
    """Open `count` connections, 50 handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)

    async def one():
        async with gate:
            _, client = await loop.create_connection(lambda: Client(host, path, stats, grant), *address)
            await asyncio.wait_for(client.open, 30)
            return client

    return await asyncio.gather(*(one() for _ in range(count)))


async def wait_command(conn):
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), ready.set_result, None)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def connected(conn, address, host, path, count, stats, grant):
    """`count` open clients, or None after telling the parent why they could not be opened."""
    try:
        return await connect_all(address, host, path, count, stats, grant)
    except (OSError, asyncio.TimeoutError) as exc:  # ConnectionError is an OSError
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return None


def closed_by_server(stats):
    """Why the step cannot be measured when the server closed clients (None when it closed none)."""
    if not stats.closed:
        return None
    codes = ", ".join(f"{code} x{n}" for code, n in sorted(stats.closed.items()))
    hint = " (4403: no valid grant)" if 4403 in stats.closed else ""
    return f"the server closed websocket clients: {codes}{hint}"


async def receiver_main(conn, address, host, path, count, grant):
    stats = Stats()
    clients = await connected(conn, address, host, path, count, stats, grant)
    if clients is None:
        return
    conn.send(("ready", len(clients)))
    while True:
        command = await wait_command(conn)
        if command[0] == "quit":
            break
        if command[0] == "quiet":  # wait until no frame of an earlier step has arrived for 1 s
            stats.reset(-1)
            deadline, last = time.time() + command[1], -1
            while time.time() < deadline and stats.late != last:
                last = stats.late
                await asyncio.sleep(1)
            conn.send(("quiet", stats.late))
            continue
        _, step, expected, deadline = command
        if closed_by_server(stats):
            conn.send(("failed", closed_by_server(stats)))
            continue
        stats.reset(step)
        conn.send(("armed",))  # the sender starts only once every receiver counts this step
        wall, cpu = time.time(), time.process_time()
        while stats.received < expected * len(clients) and time.time() < deadline:
            await asyncio.sleep(0.02)
        wall, cpu = time.time() - wall, time.process_time() - cpu
        conn.send(("result", stats.received, stats.late, stats.hist, cpu / wall))
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)


async def sender_main(conn, address, host, path, grant):
    stats = Stats()  # the sender is in the group too; it counts nothing (step -1 never matches)
    clients = await connected(conn, address, host, path, 1, stats, grant)
    if clients is None:
        return
    (client,) = clients
    conn.send(("ready", 1))
    while True:
        command = await wait_command(conn)
        if command[0] == "quit":
            break
        _, step, rate, count = command
        if closed_by_server(stats):  # e.g. 1008 after refused frames: a grant that may not send
            conn.send(("failed", closed_by_server(stats)))
            continue
        wall, cpu = time.time(), time.process_time()
        sent = 0
        while sent < count:
            due = min(count, int((time.time() - wall) * rate) + 1)
            while sent < due:
                client.send_text(f'{{"message": "b{step} {sent} {time.time():.6f}"}}')
                sent += 1
            await asyncio.sleep(0.002)
        elapsed = time.time() - wall
        conn.send(("sent", sent, elapsed, (time.process_time() - cpu) / elapsed))
    client.close()
    await asyncio.sleep(0.2)


def run_process(target, conn, *args):
    loop = event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(target(conn, *args))


class Generator:
    """The receiver processes and the sender process, connected to one target for a sweep."""

    def __init__(self, address, clients, workers=2, host="localhost", path="/ws/deploy/bench/", grant=None):
        self.conns, self.procs = [], []
        shares = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
        for share in shares:
            self._start(receiver_main, address, host, path, share, grant)
        self._start(sender_main, address, host, path, grant)
        self.receivers, self.sender = self.conns[:-1], self.conns[-1]
        for conn in self.conns:
            conn.poll(60) or self.close(TargetFailed("the clients did not connect in 60 s"))
            reply = self._recv(conn)
            if reply[0] == "failed":
                self.close(TargetFailed(f"a websocket handshake failed: {reply[1]}"))
        self.clients = clients
        self.pids = [p.pid for p in self.procs]
        self.step_id = 0

    def _start(self, target, *args):
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=run_process, args=(target, child, *args), daemon=True)
        proc.start()
        self.conns.append(parent)
        self.procs.append(proc)

    def _recv(self, conn):
        """The next reply of a generator process; TargetFailed when the process ended instead."""
        try:
            return conn.recv()
        except EOFError:
            self.close(TargetFailed("a generator process ended (see its traceback above)"))

    def _step_reply(self, conn):
        """The next reply of a process in a step; TargetFailed when the server had closed its clients."""
        reply = self._recv(conn)
        if reply[0] == "failed":
            self.close(TargetFailed(reply[1]))
        return reply

    def step(self, rate, duration, drain=2.0):
        """Send round(rate*duration) messages at `rate`/s; return what the receivers saw."""
        self.step_id += 1
        count = max(1, round(rate * duration))
        deadline = time.time() + count / rate + drain
        for conn in self.receivers:
            conn.send(("step", self.step_id, count, deadline))
        for conn in self.receivers:
            assert self._step_reply(conn) == ("armed",)
        self.sender.send(("send", self.step_id, rate, count))
        _, sent, send_seconds, sender_cpu = self._step_reply(self.sender)
        received, late, hist, cpus = 0, 0, {}, []
        for conn in self.receivers:
            _, got, old, part, cpu = self._recv(conn)
            received, late, cpus = received + got, late + old, cpus + [cpu]
            for bucket, n in part.items():
                hist[bucket] = hist.get(bucket, 0) + n
        return {
            "rate": rate,
            "messages": sent,
            "send_seconds": send_seconds,
            "offered_per_s": rate * self.clients,
            "expected": sent * self.clients,
            "received": received,
            "late_from_earlier_steps": late,
            "hist": hist,
            "sender_cpu": sender_cpu,
            "receiver_cpu": cpus,
        }

    def quiet(self, limit=15):
        """Let a backlog of an overloaded step drain before the next step."""
        for conn in self.receivers:
            conn.send(("quiet", limit))
        return sum(self._recv(conn)[1] for conn in self.receivers)

    def close(self, error=None):
        for conn in self.conns:
            try:
                conn.send(("quit",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
        if error:
            raise error


def percentiles(hist, points=(50, 99)):
    """Latency in ms at each percentile, and the maximum, from a bucket histogram."""
    total = sum(hist.values())
    result = {}
    if not total:
        return {f"p{p}": None for p in points} | {"max": None}
    ordered = sorted(hist.items())
    for p in points:
        need, seen = total * p / 100, 0
        for bucket, n in ordered:
            seen += n
            if seen >= need:
                result[f"p{p}"] = (bucket + 1) / BUCKET * 1000
                break
    result["max"] = (ordered[-1][0] + 1) / BUCKET * 1000
    return result
