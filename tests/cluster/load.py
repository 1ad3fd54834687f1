#!/usr/bin/env python3
"""Load and verification tool for rolling deploys behind the balancer.

While a deploy runs, this tool puts load through the balancer and records what the clients saw, so a
test can assert on it afterwards (0 failed HTTP requests; every websocket client received every
acknowledged push exactly once, in order):

* ``--ws-clients`` websocket clients on ``/ws/deploy/<service>/``, each following the resume/drain
  frame contract (issue 11): it waits for its ``hello``, keeps a position (last id, epoch), drops
  messages at or below its position, reconnects with ``?after=<id>&epoch=<epoch>``, after a random
  0-1000 ms on close code 4012 and with exponential backoff and full jitter otherwise. They only
  listen, offering ``--grant`` (the app's ``<user>-manage grant SERVICE``; a read grant will do) on
  every connection as the subprotocols ``deploy, grant.<token>``; a client refused with 4403 (no
  valid grant) or 4400 gives up;
* ``--http-concurrency`` threads, each GETting ``--http-path`` in a loop on a keep-alive connection;
  a reset, timeout or non-2xx answer is a failure;
* one pusher sending ``push-1``, ``push-2``, ... through ``POST /api/push/<service>/`` at
  ``--push-rate`` per second, one at a time, so the stream holds them in push order. A push answered
  202 must reach every client; any other outcome is not expected by the clients.

Phases: connect every client, then run the HTTP loops and the pusher until ``--duration`` elapses,
``--stop-file`` appears, or SIGTERM/SIGINT; then stop pushing, wait up to ``--settle`` seconds for
every client to hold every acknowledged push, close, write the JSON report and print a summary.

Usage::

    load.py --url http://127.0.0.1:8090 --host localhost --push-token TOKEN --grant GRANT \\
        (--duration S | --stop-file PATH) --report out.json \\
        [--service NAME] [--ws-clients 50] [--http-concurrency 20] [--http-path /healthz] \\
        [--push-rate 20] [--settle 10] [--connect-timeout 30] [--http-timeout 5]

Report (JSON; times in seconds, "t" counted from the start of the load)::

    {"started_at", "duration_s", "settle_s", "config": {...},
     "http": {"requests", "ok", "failed", "failures_by_kind": {"status_502"|"reset"|"timeout"|...: n},
              "first_failure_times": [t, ...], "last_failure_time", "first_failures": [{"t", "kind", "detail"}]},
     "push": {"sent", "acknowledged", "failed_by_status": {"503"|"timeout"|...: n}, "target_rate", "rate",
              "timeline": [[sent, answered, outcome], ...] (unix times of every push)},
     "ws": {"clients", "connected_at_end", "reconnects", "close_codes": {"4012": n}, "connect_errors": {...},
            "rejected", "gap_ms": {"max", "p99", "p50"} (close to next hello; null without reconnects),
            "replayed", "deduplicated", "resumed_frames", "gap_frames", "gap_reasons": {"trimmed"|"epoch": n},
            "error_frames", "malformed_frames", "foreign_messages", "clients_complete", "missing_total",
            "duplicates_total", "out_of_order_total", "unacknowledged_received",
            "worst_clients": [{"client", "missing", "first_missing", "duplicates", "out_of_order", ...}]}}

A client is complete when it received every acknowledged push exactly once, in order.

Exit status: 0 when it ran (whatever the report says), 1 when the clients could not all connect at
the start (no report), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import http.client
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

MAX_WS_CLIENTS = 2000
MAX_HTTP_CONCURRENCY = 200
MAX_PUSH_RATE = 500
MAX_DURATION = 3600
MAX_SETTLE = 600

DRAIN_CLOSE = 4012  # the server is going away: reconnect now, resuming
INVALID_SERVICE = 4400  # no reconnect
NOT_GRANTED = 4403  # no valid grant: no reconnect
REFUSALS = {INVALID_SERVICE: "invalid_service", NOT_GRANTED: "not_granted"}  # closes before the hello: give up
DRAIN_JITTER = 1.0  # seconds; reconnect after a random delay up to this on 4012
BACKOFF_BASE = 0.5  # seconds; other closes: random(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**failures))
BACKOFF_CAP = 5.0
OPEN_TIMEOUT = 10.0  # seconds for a websocket handshake, and again for its hello
FIRST_CONNECTS = 100  # handshakes in flight at once while the clients first connect
FAILURE_PAUSE = 0.05  # seconds an HTTP loop waits after a failure, so refused connections do not spin
POLL = 0.1  # seconds between checks of the stop conditions and of the settle condition

SAMPLE = 20  # failures and missing push numbers listed in the report
WORST = 5  # clients listed under worst_clients

SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
GRANT_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,4096}")  # base64url payload and signature, joined by a dot
SUBPROTOCOL = "deploy"  # what the app selects; the grant rides along as "grant.<token>"
PUSH_MESSAGE = re.compile(r"push-(\d+)")


def parse_id(text: str) -> tuple[int, int]:
    """A stream id ``"<ms>-<n>"`` as the pair it compares as; ValueError when malformed."""
    ms, n = text.split("-")
    return int(ms), int(n)


def format_id(pair: tuple[int, int]) -> str:
    """The ``"<ms>-<n>"`` form of an id pair."""
    return f"{pair[0]}-{pair[1]}"


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile of values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def backoff(failures: int) -> float:
    """Exponential backoff with full jitter after `failures` consecutive failures (0 for the first)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**failures))


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set (at once or meanwhile)."""
    if stop.is_set():  # wait_for with a timeout <= 0 would not look
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except asyncio.TimeoutError:
        return False
    return True


class NumberSet:
    """A set of integers kept as sorted, disjoint runs [start, end]: pushes mostly arrive as one run."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.size = 0

    def __contains__(self, number: int) -> bool:
        i = bisect.bisect_right(self.starts, number) - 1
        return i >= 0 and number <= self.ends[i]

    def add(self, number: int) -> bool:
        """Add `number`; False when it was there already."""
        i = bisect.bisect_right(self.starts, number) - 1
        if i >= 0 and number <= self.ends[i]:
            return False
        self.size += 1
        joins_left = i >= 0 and self.ends[i] == number - 1
        joins_right = i + 1 < len(self.starts) and self.starts[i + 1] == number + 1
        if joins_left and joins_right:
            self.ends[i] = self.ends.pop(i + 1)
            del self.starts[i + 1]
        elif joins_left:
            self.ends[i] = number
        elif joins_right:
            self.starts[i + 1] = number
        else:
            self.starts.insert(i + 1, number)
            self.ends.insert(i + 1, number)
        return True

    def count_in(self, numbers: list[int]) -> int:
        """How many of the sorted `numbers` are in the set."""
        return sum(
            bisect.bisect_right(numbers, end) - bisect.bisect_left(numbers, start)
            for start, end in zip(self.starts, self.ends)
        )

    def first_missing(self, numbers: list[int], limit: int) -> list[int]:
        """The first `limit` of the sorted `numbers` that are not in the set."""
        missing = []
        for number in numbers:
            if number not in self:
                missing.append(number)
                if len(missing) == limit:
                    break
        return missing


class Target:
    """Where the balancer listens, and the site name sent as Host (and in Origin) to it."""

    def __init__(self, url: str, host: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must be http://HOST[:PORT], not {url!r}")
        self.address = parts.hostname
        self.port = parts.port or 80
        self.host = host or parts.netloc
        self.origin = f"http://{self.host}"
        try:
            parse_uri(self.ws_uri("/"))
        except InvalidURI as exc:
            raise ValueError(f"--host {self.host!r} is not a valid host name") from exc

    def ws_uri(self, path: str) -> str:
        """The websocket URI for `path`; its authority is the site name, which websockets sends as Host."""
        return f"ws://{self.host}{path}"


class HttpSession:
    """One keep-alive HTTP/1.1 connection, used from one thread; it reconnects after any error."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
        """Send one request and read the whole answer; its status. Raises OSError/HTTPException."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.target.address, self.target.port, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=body, headers={"Host": self.target.host, **(headers or {})})
            response = self.connection.getresponse()
            response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        """Close the connection, if any; the next request opens a new one."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def http_failure_kind(exc: BaseException) -> str:
    """A short name for why an HTTP request failed."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError: check it first
        return "closed"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.HTTPException):
        return "bad_response"
    return type(exc).__name__


class HttpLoad:
    """`concurrency` threads, each GETting `path` in a loop until stopped, counting failures by kind."""

    def __init__(
        self, target: Target, path: str, concurrency: int, timeout: float, start: float, pause: float = 0
    ) -> None:
        self.target = target
        self.path = path
        self.concurrency = concurrency
        self.pause = pause  # seconds each loop waits between two requests (bounds the load on a small machine)
        self.timeout = timeout
        self.start = start  # time.monotonic() of the load phase's start; failure times count from it
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.failures_by_kind: Counter[str] = Counter()
        self.first_failures: list[dict] = []
        self.last_failure_time: float | None = None

    async def run(self) -> None:
        """Run the loops in their own threads until `stop` is set and each has finished its request."""
        if not self.concurrency:
            return
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="http") as executor:
            await asyncio.gather(*(loop.run_in_executor(executor, self.worker) for _ in range(self.concurrency)))

    def worker(self) -> None:
        """One GET loop on one keep-alive connection."""
        session = HttpSession(self.target, self.timeout)
        try:
            while not self.stop.is_set():
                sent = time.monotonic() - self.start
                try:
                    status = session.request("GET", self.path)
                    kind, detail = (None, "") if 200 <= status < 300 else (f"status_{status}", "")
                except (OSError, http.client.HTTPException) as exc:
                    kind, detail = http_failure_kind(exc), str(exc)
                self.record(sent, kind, detail)
                # After a failure: no busy loop against a balancer that refuses.
                self.stop.wait(FAILURE_PAUSE if kind is not None else self.pause)
        finally:
            session.close()

    def record(self, sent: float, kind: str | None, detail: str) -> None:
        """Count one request sent at `sent` seconds into the load; a failure when `kind` is given."""
        with self.lock:
            self.requests += 1
            if kind is None:
                self.ok += 1
                return
            self.failures_by_kind[kind] += 1
            sent = round(sent, 3)
            self.last_failure_time = max(sent, self.last_failure_time or 0.0)
            # Requests end out of order across the loops: keep the SAMPLE earliest by the time they were sent.
            bisect.insort(self.first_failures, {"t": sent, "kind": kind, "detail": detail}, key=lambda f: f["t"])
            del self.first_failures[SAMPLE:]

    def report(self) -> dict:
        """The report's "http" section."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.requests - self.ok,
            "failures_by_kind": dict(self.failures_by_kind),
            "first_failure_times": [failure["t"] for failure in self.first_failures],
            "last_failure_time": self.last_failure_time,
            "first_failures": self.first_failures,
        }


class Pusher:
    """Sends push-1, push-2, ... one at a time at `rate` per second; keeps the acknowledged numbers."""

    def __init__(self, target: Target, service: str, token: str, rate: float, timeout: float) -> None:
        self.session = HttpSession(target, timeout)
        self.path = f"/api/push/{service}/"
        self.token = token
        self.rate = rate
        self.sent = 0
        self.acknowledged: list[int] = []  # sorted: numbers only grow
        self.failed_by_status: Counter[str] = Counter()
        self.elapsed = 0.0
        # [sent, answered (unix times, rounded to ms), outcome] of every push: a test relates them to its faults.
        self.timeline: list[list] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Push until `stop` is set. A late push is sent at once, without catching up on the missed ones."""
        loop = asyncio.get_running_loop()
        started = next_at = loop.time()
        with ThreadPoolExecutor(1, thread_name_prefix="push") as executor:
            while not await sleep_or_stop(stop, next_at - loop.time()):
                self.sent += 1
                sent_at = time.time()
                outcome = await loop.run_in_executor(executor, self.push, self.sent)
                self.timeline.append([round(sent_at, 3), round(time.time(), 3), outcome])
                if outcome == "202":
                    self.acknowledged.append(self.sent)
                else:
                    self.failed_by_status[outcome] += 1
                next_at = max(next_at + 1 / self.rate, loop.time())
        self.session.close()
        self.elapsed = loop.time() - started

    def push(self, number: int) -> str:
        """POST push-<number>; its status as a string, or why it failed."""
        body = json.dumps({"message": f"push-{number}"}).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            return str(self.session.request("POST", self.path, body, headers))
        except (OSError, http.client.HTTPException) as exc:
            return http_failure_kind(exc)

    def report(self) -> dict:
        """The report's "push" section."""
        return {
            "sent": self.sent,
            "acknowledged": len(self.acknowledged),
            "failed_by_status": dict(self.failed_by_status),
            "target_rate": self.rate,
            "rate": round(self.sent / self.elapsed, 2) if self.elapsed else 0.0,
            "timeline": self.timeline,
        }


class NoHello(Exception):
    """The server's first frame was not a hello."""


def refusal(exc: BaseException) -> int | None:
    """The close code when the server refused the connection for good (REFUSALS) before its hello, else None."""
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None and exc.rcvd.code in REFUSALS:
        return exc.rcvd.code
    return None


def connect_error_kind(exc: BaseException) -> str:
    """A short name for why a websocket connection could not be opened."""
    if isinstance(exc, InvalidStatus):
        return f"status_{exc.response.status_code}"
    if isinstance(exc, NoHello):
        return "no_hello"
    if refusal(exc) is not None:
        return REFUSALS[refusal(exc)]
    if isinstance(exc, ConnectionClosed):
        return "closed_before_hello"
    if isinstance(exc, (asyncio.TimeoutError, socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    return type(exc).__name__


class WsClient:
    """One websocket client following the contract, and what it received.

    Its position (last id and epoch) comes from its first hello, then from each message it keeps; it
    drops messages at or below its position (counted as deduplicated). Of the push numbers it keeps,
    one seen before is a duplicate and one below the highest so far is out of order.
    """

    def __init__(self, index: int, target: Target, service: str, grant: str, closing: asyncio.Event) -> None:
        self.index = index
        self.target = target
        self.service = service
        self.grant = grant
        self.closing = closing  # set when the run ends: close, do not reconnect
        self.position: tuple[int, int] | None = None
        self.epoch: str | None = None
        self.received = NumberSet()
        self.highest = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.deduplicated = 0
        self.replayed = 0
        self.resumed_frames = 0
        self.gap_reasons: Counter[str] = Counter()
        self.error_frames = 0
        self.malformed_frames = 0
        self.foreign_messages = 0
        self.close_codes: Counter[str] = Counter()
        self.connect_errors: Counter[str] = Counter()
        self.reconnect_gaps: list[float] = []  # seconds from losing a connection to the next hello
        self.lost_at: float | None = None
        self.rejected = False
        self.connection: ClientConnection | None = None  # the open connection, after its hello
        self.greeted = asyncio.Event()  # the first hello arrived

    def path(self) -> str:
        """The websocket path, with the position once there is one."""
        path = f"/ws/deploy/{self.service}/"
        if self.position is not None:
            query = {"after": format_id(self.position)}
            if self.epoch is not None:
                query["epoch"] = self.epoch
            path += "?" + urlencode(query)
        return path

    async def run(self, first_connects: asyncio.Semaphore) -> None:
        """Stay connected, reconnecting as the contract says, until `closing` is set or the service is refused."""
        failures = 0  # consecutive failures since the last hello, for the backoff
        while not self.closing.is_set():
            try:
                if self.greeted.is_set():
                    connection = await self.open()
                else:
                    async with first_connects:
                        connection = await self.open()
            except (OSError, InvalidHandshake, asyncio.TimeoutError, ConnectionClosed, NoHello) as exc:
                self.connect_errors[connect_error_kind(exc)] += 1
                if refusal(exc) is not None:
                    self.rejected = True
                    return
                delay = backoff(failures)
                failures += 1
            else:
                failures = 0
                if self.closing.is_set():
                    await connection.close()
                    return
                code = await self.read(connection)
                if self.closing.is_set():
                    return
                self.close_codes[str(code)] += 1
                if code == INVALID_SERVICE:
                    self.rejected = True
                    return
                if code == DRAIN_CLOSE:
                    delay = random.uniform(0, DRAIN_JITTER)
                else:
                    delay = backoff(failures)
                    failures += 1
            await sleep_or_stop(self.closing, delay)

    async def open(self) -> ClientConnection:
        """Open a connection to the balancer and read its hello."""
        connection = await connect(
            self.target.ws_uri(self.path()),
            origin=self.target.origin,
            subprotocols=[SUBPROTOCOL, f"grant.{self.grant}"],
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            host=self.target.address,
            port=self.target.port,
        )
        try:
            self.on_hello(await asyncio.wait_for(connection.recv(), OPEN_TIMEOUT))
        except BaseException:
            await connection.close()
            raise
        return connection

    def on_hello(self, raw: str | bytes) -> None:
        """Take the hello's position when there is none yet; end the reconnect gap. NoHello when it is none."""
        try:
            frame = json.loads(raw)
            if frame["type"] != "hello":
                raise ValueError("not a hello")
            last, epoch = parse_id(frame["last"]), frame["epoch"]
        except (ValueError, KeyError, TypeError) as exc:
            raise NoHello(f"first frame: {raw!r:.200}") from exc
        if self.position is None:
            self.position, self.epoch = last, epoch
        if self.lost_at is not None:
            self.reconnect_gaps.append(time.monotonic() - self.lost_at)
            self.lost_at = None
        self.greeted.set()

    async def read(self, connection: ClientConnection) -> int:
        """Handle frames until the connection closes; the close code received (1006 when none)."""
        self.connection = connection
        try:
            while True:
                self.on_frame(await connection.recv())
        except ConnectionClosed as exc:
            self.lost_at = time.monotonic()
            return exc.rcvd.code if exc.rcvd is not None else 1006
        finally:
            self.connection = None

    def on_frame(self, raw: str | bytes) -> None:
        """Handle one frame after the hello."""
        try:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "message":
                self.on_message(frame)
            elif kind == "resumed":
                self.resumed_frames += 1
            elif kind == "gap":
                self.gap_reasons[str(frame.get("reason"))] += 1
            elif kind == "error":
                self.error_frames += 1
            else:
                self.malformed_frames += 1
        except (ValueError, KeyError, TypeError):
            self.malformed_frames += 1

    def on_message(self, frame: dict) -> None:
        """Drop a message at or below the position; otherwise move there and check its push number."""
        message_id = parse_id(frame["id"])
        if frame.get("replay"):
            self.replayed += 1
        if self.position is not None and message_id <= self.position:
            self.deduplicated += 1
            return
        self.position = message_id
        self.epoch = frame["epoch"]
        match = PUSH_MESSAGE.fullmatch(str(frame.get("message")))
        if match is None:
            self.foreign_messages += 1
            return
        number = int(match.group(1))
        if not self.received.add(number):
            self.duplicates += 1
        elif number < self.highest:
            self.out_of_order += 1
        else:
            self.highest = number

    def has_all(self, acknowledged: list[int]) -> bool:
        """Whether every acknowledged push arrived."""
        return self.received.count_in(acknowledged) == len(acknowledged)

    def verdict(self, acknowledged: list[int]) -> dict:
        """This client's figures against the acknowledged pushes."""
        kept = self.received.count_in(acknowledged)
        missing = len(acknowledged) - kept
        return {
            "client": self.index,
            "complete": missing == 0 and self.duplicates == 0 and self.out_of_order == 0,
            "missing": missing,
            "first_missing": self.received.first_missing(acknowledged, SAMPLE) if missing else [],
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "unacknowledged_received": self.received.size - kept,
            "reconnects": len(self.reconnect_gaps),
            "close_codes": dict(self.close_codes),
            "gap_frames": sum(self.gap_reasons.values()),
            "connected": self.connection is not None,
        }


def ws_report(clients: list[WsClient], acknowledged: list[int], connected_at_end: int) -> dict:
    """The report's "ws" section."""
    verdicts = [client.verdict(acknowledged) for client in clients]
    gaps_ms = [gap * 1000 for client in clients for gap in client.reconnect_gaps]

    def total(counters: list[Counter[str]]) -> dict:
        return dict(sum(counters, Counter()))

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    gap_reasons = total([client.gap_reasons for client in clients])
    troubled = [v for v in verdicts if not v["complete"]]
    troubled.sort(key=lambda v: (v["missing"] + v["duplicates"] + v["out_of_order"], v["reconnects"]), reverse=True)
    return {
        "clients": len(clients),
        "connected_at_end": connected_at_end,
        "reconnects": len(gaps_ms),
        "close_codes": total([client.close_codes for client in clients]),
        "connect_errors": total([client.connect_errors for client in clients]),
        "rejected": sum(client.rejected for client in clients),
        "gap_ms": {
            "max": rounded(max(gaps_ms, default=None)),
            "p99": rounded(percentile(gaps_ms, 99)),
            "p50": rounded(percentile(gaps_ms, 50)),
        },
        "replayed": sum(client.replayed for client in clients),
        "deduplicated": sum(client.deduplicated for client in clients),
        "resumed_frames": sum(client.resumed_frames for client in clients),
        "gap_frames": sum(gap_reasons.values()),
        "gap_reasons": gap_reasons,
        "error_frames": sum(client.error_frames for client in clients),
        "malformed_frames": sum(client.malformed_frames for client in clients),
        "foreign_messages": sum(client.foreign_messages for client in clients),
        "clients_complete": sum(v["complete"] for v in verdicts),
        "missing_total": sum(v["missing"] for v in verdicts),
        "duplicates_total": sum(v["duplicates"] for v in verdicts),
        "out_of_order_total": sum(v["out_of_order"] for v in verdicts),
        "unacknowledged_received": sum(v["unacknowledged_received"] for v in verdicts),
        "worst_clients": troubled[:WORST],
    }


async def wait_for_hellos(clients: list[WsClient], timeout: float, stop: asyncio.Event) -> bool:
    """Wait until every client has had its first hello; False on timeout, once a client gave up (refused for good),
    or when `stop` is set first."""
    deadline = time.monotonic() + timeout
    while not all(client.greeted.is_set() for client in clients):
        gave_up = any(client.rejected for client in clients)
        if gave_up or time.monotonic() >= deadline or await sleep_or_stop(stop, POLL):
            return False
    return True


async def wait_for_end(stop: asyncio.Event, duration: float, stop_file: str | None) -> None:
    """Return once `duration` seconds passed, `stop_file` exists, or `stop` is set (by a signal)."""
    deadline = time.monotonic() + duration
    while not await sleep_or_stop(stop, min(POLL, deadline - time.monotonic())):
        if time.monotonic() >= deadline or (stop_file and os.path.exists(stop_file)):
            return


async def settle(clients: list[WsClient], acknowledged: list[int], seconds: float) -> None:
    """Wait up to `seconds` for every client to hold every acknowledged push."""
    deadline = time.monotonic() + seconds
    waiting = clients
    while True:
        waiting = [client for client in waiting if not client.has_all(acknowledged)]
        if not waiting or time.monotonic() >= deadline:
            return
        await asyncio.sleep(POLL)


async def run(args: argparse.Namespace, target: Target) -> dict | None:
    """Run the phases; the report, or None when the clients could not all connect at the start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    closing = asyncio.Event()
    clients = [WsClient(i, target, args.service, args.grant, closing) for i in range(args.ws_clients)]
    first_connects = asyncio.Semaphore(FIRST_CONNECTS)
    client_tasks = [asyncio.ensure_future(client.run(first_connects)) for client in clients]
    try:
        if not await wait_for_hellos(clients, args.connect_timeout, stop):
            greeted = sum(client.greeted.is_set() for client in clients)
            errors = dict(sum((client.connect_errors for client in clients), Counter()))
            print(f"load: only {greeted}/{len(clients)} clients connected; errors: {errors}", file=sys.stderr)
            if "not_granted" in errors:
                print(f"load: the app refused the grant (4403): give --grant for {args.service}", file=sys.stderr)
            return None

        started_at = time.time()
        start = time.monotonic()
        http_load = HttpLoad(target, args.http_path, args.http_concurrency, args.http_timeout, start, args.http_pause)
        pusher = Pusher(target, args.service, args.push_token, args.push_rate, args.http_timeout)
        http_task = asyncio.ensure_future(http_load.run())
        push_task = asyncio.ensure_future(pusher.run(stop))
        await wait_for_end(stop, args.duration or MAX_DURATION, args.stop_file)
        stop.set()
        http_load.stop.set()
        await asyncio.gather(http_task, push_task)
        duration = time.monotonic() - start

        settle_start = time.monotonic()
        await settle(clients, pusher.acknowledged, args.settle)
        settle_s = time.monotonic() - settle_start
        connected_at_end = sum(client.connection is not None for client in clients)
        return {
            "started_at": round(started_at, 3),
            "duration_s": round(duration, 3),
            "settle_s": round(settle_s, 3),
            "config": {
                "url": args.url,
                "host": target.host,
                "service": args.service,
                "ws_clients": args.ws_clients,
                "http_concurrency": args.http_concurrency,
                "http_path": args.http_path,
                "http_pause": args.http_pause,
                "push_rate": args.push_rate,
            },
            "http": http_load.report(),
            "push": pusher.report(),
            "ws": ws_report(clients, pusher.acknowledged, connected_at_end),
        }
    finally:
        closing.set()
        await asyncio.gather(*(c.connection.close() for c in clients if c.connection is not None))
        await asyncio.gather(*client_tasks)


def summary(report: dict, path: str) -> str:
    """A short human summary of the report."""
    http_section, push, ws = report["http"], report["push"], report["ws"]

    def counts(counter: dict) -> str:
        return f" ({', '.join(f'{kind}: {n}' for kind, n in counter.items())})" if counter else ""

    gap = ws["gap_ms"]
    gap_text = f"gap max {gap['max']} ms, p99 {gap['p99']} ms, p50 {gap['p50']} ms" if ws["reconnects"] else "no gap"
    lines = [
        f"load: {report['duration_s']:.1f} s (+{report['settle_s']:.1f} s settle), "
        f"service {report['config']['service']}",
        f"http: {http_section['requests']} requests, {http_section['failed']} failed"
        f"{counts(http_section['failures_by_kind'])}",
        f"push: {push['sent']} sent, {push['acknowledged']} acknowledged, {push['rate']}/s"
        f"{counts(push['failed_by_status'])}",
        f"ws: {ws['clients_complete']}/{ws['clients']} clients complete, {ws['connected_at_end']} connected at end; "
        f"missing {ws['missing_total']}, duplicates {ws['duplicates_total']}, out of order {ws['out_of_order_total']}",
        f"ws: {ws['reconnects']} reconnects{counts(ws['close_codes'])}, {gap_text}; "
        f"replayed {ws['replayed']}, resumed {ws['resumed_frames']}, gaps {ws['gap_frames']}",
        f"report: {path}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Target]:
    """The checked arguments and target; exits 2 (argparse's usage error) on bad ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the balancer, http://HOST[:PORT]")
    parser.add_argument("--host", help="the site name sent as Host and in Origin (default: the URL's)")
    parser.add_argument("--service", default=f"load-{secrets.token_hex(4)}", help="default: load-<random>")
    parser.add_argument("--ws-clients", type=int, default=50)
    parser.add_argument("--http-concurrency", type=int, default=20)
    parser.add_argument("--http-path", default="/healthz")
    parser.add_argument("--http-pause", type=float, default=0.0, help="seconds each HTTP loop waits between requests")
    parser.add_argument("--push-rate", type=float, default=20.0, help="pushes per second")
    parser.add_argument("--push-token", default=os.environ.get("DEPLOY_PUSH_TOKEN"), help="default: $DEPLOY_PUSH_TOKEN")
    parser.add_argument(
        "--grant",
        default=os.environ.get("DEPLOY_GRANT"),
        help="the websocket clients' grant for the service (<user>-manage grant SERVICE); default: $DEPLOY_GRANT",
    )
    parser.add_argument("--duration", type=float, help="seconds of load")
    parser.add_argument("--stop-file", help="end the load once this file exists (at most 3600 s)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait for the last pushes")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="seconds for all clients to connect")
    parser.add_argument("--http-timeout", type=float, default=5.0, help="seconds per HTTP request")
    parser.add_argument("--report", required=True, help="where to write the JSON report")
    args = parser.parse_args(argv)

    checks = [
        (1 <= args.ws_clients <= MAX_WS_CLIENTS, f"--ws-clients must be 1..{MAX_WS_CLIENTS}"),
        (0 <= args.http_concurrency <= MAX_HTTP_CONCURRENCY, f"--http-concurrency must be 0..{MAX_HTTP_CONCURRENCY}"),
        (0 < args.push_rate <= MAX_PUSH_RATE, f"--push-rate must be > 0 and <= {MAX_PUSH_RATE}"),
        (args.duration is not None or args.stop_file, "give --duration or --stop-file"),
        (args.duration is None or 0 < args.duration <= MAX_DURATION, f"--duration must be > 0 and <= {MAX_DURATION}"),
        (not (args.stop_file and os.path.exists(args.stop_file)), "--stop-file exists already"),
        (0 <= args.settle <= MAX_SETTLE, f"--settle must be 0..{MAX_SETTLE}"),
        (args.connect_timeout > 0 and args.http_timeout > 0, "timeouts must be > 0"),
        (bool(args.push_token), "give --push-token or set DEPLOY_PUSH_TOKEN"),
        (bool(args.grant), "give --grant or set DEPLOY_GRANT (a grant for the service: <user>-manage grant SERVICE)"),
        (not args.grant or bool(GRANT_TOKEN.fullmatch(args.grant)), "--grant must be a token of A-Z a-z 0-9 _ . -"),
        (bool(SERVICE_NAME.fullmatch(args.service)), f"--service must match {SERVICE_NAME.pattern}"),
        (args.http_path.startswith("/"), "--http-path must start with /"),
        (0 <= args.http_pause <= 10, "--http-pause must be 0-10 seconds"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    try:
        target = Target(args.url, args.host)
    except ValueError as exc:
        parser.error(str(exc))
    return args, target


def raise_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit towards `needed` (up to the hard limit): one socket per client."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the tool; the exit status."""
    args, target = parse_args(sys.argv[1:] if argv is None else argv)
    raise_fd_limit(args.ws_clients + args.http_concurrency + 100)
    report = asyncio.run(run(args, target))
    if report is None:
        return 1
    with open(args.report, "w") as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    print(summary(report, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
