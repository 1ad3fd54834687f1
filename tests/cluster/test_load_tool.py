"""Tests of tests/cluster/load.py against a fake app that speaks the resume/drain frame contract.

FakeApp runs in a thread with its own event loop, on ephemeral ports of 127.0.0.1: a small HTTP/1.1
front (``GET /healthz``, ``POST /api/push/<service>/``) that, like the balancer, passes websocket
upgrades on to a websockets server. It keeps one stream for whatever service is asked for, to clients
that offer the grant GRANT as the app wants it (subprotocols ``deploy, grant.<token>``); its modes
break the contract in the ways the tool must notice. The tool runs as a subprocess, as in a deploy test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

LOAD = Path(__file__).resolve().parent / "load.py"
SITE = "localhost"  # the Host the fake app accepts, and the Origin's host
TOKEN = "push-secret"
GRANT = "eyJzIjoic3ZjIn0.c2lnbmF0dXJl-_x"  # what a grant looks like: base64url payload and signature
CLIENTS = 5
PUSH_RATE = 50  # per second: a push lands in most reconnect gaps (0-1000 ms after a 4012)


def load_module():
    """load.py as a module, for its helpers."""
    spec = importlib.util.spec_from_file_location("cluster_load", LOAD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_module()


def format_id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def parse_id(text: str) -> tuple[int, int]:
    ms, n = text.split("-")
    return int(ms), int(n)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy `reader` to `writer` until end of file, then close `writer`."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class FakeApp:
    """The app behind the balancer, as the load tool sees it.

    drain_at: push counts after which every websocket is closed with 4012.
    lose_on_resume: a resuming client gets no replay (``resumed`` with 0): what was pushed while it was
        away is lost.
    replay_overlap: a resume replays this many entries at or before the client's ``after`` too, which
        the client must drop.
    maxlen: the stream keeps only this many entries, so a resume from a trimmed id gets a ``gap``.
    fail_every: every n-th ``GET /healthz`` is answered 502.
    refuse_after_drain: for this many seconds after a drain, websocket upgrades are answered 503, as the
        balancer does while no backend is up.
    """

    def __init__(
        self, *, drain_at=(), lose_on_resume=False, replay_overlap=0, maxlen=None, fail_every=0, refuse_after_drain=0
    ):
        self.drain_at = set(drain_at)
        self.lose_on_resume = lose_on_resume
        self.replay_overlap = replay_overlap
        self.maxlen = maxlen
        self.fail_every = fail_every
        self.refuse_after_drain = refuse_after_drain
        self.refusing_until = 0.0
        self.epoch = secrets.token_hex(4)
        self.stream: list[tuple[tuple[int, int], str]] = []
        self.last_id = (0, 0)
        self.pushes = 0
        self.gets = 0
        self.refused_headers = 0
        self.refused_grants = 0
        self.queues: dict[ServerConnection, asyncio.Queue] = {}  # the group: live entries per connection
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self.main(),), daemon=True)

    def __enter__(self) -> FakeApp:
        self.thread.start()
        assert self.ready.wait(5), "the fake app did not start"
        return self

    def __exit__(self, *exc_info) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)

    async def main(self) -> None:
        """Serve until `stop` is set."""
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with serve(self.websocket, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as ws_server:
            self.ws_port = ws_server.sockets[0].getsockname()[1]
            front = await asyncio.start_server(self.front, "127.0.0.1", 0)
            async with front:
                self.port = front.sockets[0].getsockname()[1]
                self.ready.set()
                await self.stop.wait()

    async def front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive; a websocket upgrade is spliced to the websockets server."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {name.strip().lower(): value.strip() for name, value in (x.split(":", 1) for x in lines if x)}
                upgrade = headers.get("upgrade", "").lower() == "websocket"
                if headers.get("host") != SITE or (upgrade and headers.get("origin") != f"http://{SITE}"):
                    self.refused_headers += 1
                    status, payload = 403, b'{"error": "host or origin"}'
                elif upgrade and time.monotonic() < self.refusing_until:
                    status, payload = 503, b'{"error": "no server available"}'
                elif upgrade:
                    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.ws_port)
                    upstream_writer.write(head)
                    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
                    return
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                    status, payload = self.http(method, urlsplit(target).path, headers, body)
                writer.write(b"HTTP/1.1 %d -\r\nContent-Length: %d\r\n\r\n%s" % (status, len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def http(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
        """Answer a plain HTTP request: status and body."""
        if method == "GET" and path == "/healthz":
            self.gets += 1
            if self.fail_every and self.gets % self.fail_every == 0:
                return 502, b'{"error": "bad gateway"}'
            return 200, b'{"status": "ok"}'
        if method == "POST" and path.startswith("/api/push/"):
            if headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, b'{"error": "token"}'
            self.push(json.loads(body)["message"])
            return 202, b'{"status": "pushed"}'
        return 404, b'{"error": "not found"}'

    def push(self, message: str) -> None:
        """Add an entry to the stream, send it to the group, and drain when it is time to."""
        ms = int(time.time() * 1000)
        self.last_id = (ms, 0) if ms > self.last_id[0] else (self.last_id[0], self.last_id[1] + 1)
        self.stream.append((self.last_id, message))
        if self.maxlen:
            del self.stream[: -self.maxlen]
        for queue in self.queues.values():
            queue.put_nowait((self.last_id, message))
        self.pushes += 1
        if self.pushes in self.drain_at:
            self.refusing_until = time.monotonic() + self.refuse_after_drain
            for connection in list(self.queues):
                asyncio.ensure_future(connection.close(4012, "drain"))

    def frame(self, service: str, entry_id: tuple[int, int], message: str, **extra) -> str:
        """A message frame."""
        frame = {"type": "message", "service": service, "message": message, "id": format_id(entry_id)}
        return json.dumps({**frame, "epoch": self.epoch, "source": "api", "ts": time.time(), **extra})

    async def websocket(self, connection: ServerConnection) -> None:
        """Join the group, say hello, replay when asked to, then send live entries not sent yet. Without the grant:
        closed with 4403 at once, as the app does."""
        if f"grant.{GRANT}" not in offered(connection):
            self.refused_grants += 1
            await connection.close(4403, "no grant")
            return
        url = urlsplit(connection.request.path)
        service = url.path.split("/")[3]
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        self.queues[connection] = queue = asyncio.Queue()
        stream = list(self.stream)
        try:
            last = stream[-1][0] if stream else (0, 0)
            await connection.send(
                json.dumps({"type": "hello", "service": service, "epoch": self.epoch, "last": format_id(last)})
            )
            sent = (0, 0)
            if "after" in query:
                sent = await self.replay(connection, service, stream, parse_id(query["after"]), query.get("epoch"))
            live = asyncio.ensure_future(self.send_live(connection, service, queue, sent))
            await connection.wait_closed()
            live.cancel()
        except ConnectionClosed:
            pass
        finally:
            del self.queues[connection]

    async def send_live(self, connection, service, queue, sent) -> None:
        """Send the group's entries that follow `sent`, the last id this connection sent."""
        try:
            while True:
                entry_id, message = await queue.get()
                if entry_id > sent:
                    await connection.send(self.frame(service, entry_id, message))
                    sent = entry_id
        except ConnectionClosed:
            pass

    async def replay(self, connection, service, stream, after, epoch) -> tuple[int, int]:
        """Replay what follows `after` (as the mode says), then resumed or gap; the last id sent."""
        ids = [entry_id for entry_id, _ in stream]
        if self.lose_on_resume:
            entries, end = [], {"type": "resumed"}
        elif epoch == self.epoch and after in ids:
            entries, end = stream[max(0, ids.index(after) + 1 - self.replay_overlap) :], {"type": "resumed"}
        else:
            reason = "trimmed" if epoch == self.epoch else "epoch"
            entries, end = [e for e in stream if e[0] > after], {"type": "gap", "reason": reason}
        sent = after
        for entry_id, message in entries:
            await connection.send(self.frame(service, entry_id, message, replay=True))
            sent = max(sent, entry_id)
        await connection.send(json.dumps({**end, "replayed": len(entries)}))
        return sent


def offered(connection: ServerConnection) -> list[str]:
    """The subprotocols the client offered."""
    values = connection.request.headers.get_all("Sec-WebSocket-Protocol")
    return [name.strip() for value in values for name in value.split(",")]


def select_subprotocol(connection: ServerConnection, subprotocols: list[str]) -> str | None:
    """The app selects "deploy" when it is offered, and accepts a client that offers none (to close it)."""
    return "deploy" if "deploy" in subprotocols else None


def tool_command(app: FakeApp, report: Path, options: tuple[str, ...], settle: float = 5) -> list[str]:
    """The command running load.py against `app` with 1.5 s of load, unless `options` say otherwise."""
    return [
        sys.executable,
        str(LOAD),
        f"--url=http://127.0.0.1:{app.port}",
        f"--host={SITE}",
        "--service=svc",
        f"--ws-clients={CLIENTS}",
        "--http-concurrency=2",
        f"--push-rate={PUSH_RATE}",
        f"--push-token={TOKEN}",
        f"--grant={GRANT}",
        f"--settle={settle}",
        "--connect-timeout=5",
        f"--report={report}",
        *(options or ["--duration=1.5"]),
    ]


def run_tool(app: FakeApp, tmp_path: Path, *options: str, settle: float = 5) -> dict:
    """Run load.py against `app` (see tool_command); its report."""
    report = tmp_path / "report.json"
    result = subprocess.run(tool_command(app, report, options, settle), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "clients complete" in result.stdout
    assert app.refused_headers == app.refused_grants == 0
    return json.loads(report.read_text())


def assert_all_complete(report: dict) -> None:
    """Every client received every acknowledged push exactly once, in order."""
    ws = report["ws"]
    assert report["push"]["acknowledged"] == report["push"]["sent"] > 0
    assert ws["clients_complete"] == ws["connected_at_end"] == CLIENTS
    assert ws["missing_total"] == ws["duplicates_total"] == ws["out_of_order_total"] == 0
    assert ws["worst_clients"] == []


def test_correct_server_through_drains(tmp_path):
    with FakeApp(drain_at={10, 40}) as app:
        report = run_tool(app, tmp_path)
    assert_all_complete(report)
    http, ws = report["http"], report["ws"]
    assert http["requests"] == http["ok"] > 0
    assert http["failed"] == 0 and http["failures_by_kind"] == {}
    assert ws["close_codes"]["4012"] >= CLIENTS
    assert ws["reconnects"] == ws["resumed_frames"] == ws["close_codes"]["4012"]
    assert ws["replayed"] > 0 and ws["gap_frames"] == 0
    assert 0 < ws["gap_ms"]["p50"] <= ws["gap_ms"]["p99"] <= ws["gap_ms"]["max"] < 2000


def test_messages_lost_across_a_reconnect_are_missing(tmp_path):
    with FakeApp(drain_at={10}, lose_on_resume=True) as app:
        report = run_tool(app, tmp_path, settle=1)
    ws = report["ws"]
    assert ws["reconnects"] >= CLIENTS
    assert ws["missing_total"] > 0
    assert ws["clients_complete"] < CLIENTS
    assert ws["duplicates_total"] == ws["out_of_order_total"] == 0
    worst = ws["worst_clients"][0]
    assert worst["missing"] > 0 and worst["first_missing"]


def test_http_502s_are_counted_and_the_stop_file_ends_the_load(tmp_path):
    stop_file = tmp_path / "deployed"
    threading.Timer(1.0, stop_file.touch).start()
    with FakeApp(fail_every=3) as app:
        report = run_tool(app, tmp_path, f"--stop-file={stop_file}")
    http = report["http"]
    assert http["failed"] == http["failures_by_kind"]["status_502"] > 0
    assert http["requests"] == http["ok"] + http["failed"]
    assert abs(http["failed"] - http["requests"] / 3) <= 2  # one in three, give or take the last ones
    assert http["first_failure_times"] == sorted(http["first_failure_times"])
    assert report["duration_s"] < 3  # no --duration: the stop file ended it
    assert_all_complete(report)


def test_failures_are_listed_by_the_time_they_were_sent_not_the_time_they_ended():
    load = tool.HttpLoad(tool.Target("http://127.0.0.1:1", None), "/", concurrency=2, timeout=1, start=0)
    for sent in (0.2, 0.1, *(1 + n / 100 for n in range(tool.SAMPLE)), 0.15):  # slow requests end after later ones
        load.record(sent, "status_502", "")
    report = load.report()
    assert report["first_failure_times"][:3] == [0.1, 0.15, 0.2]
    assert len(report["first_failure_times"]) == tool.SAMPLE
    assert report["last_failure_time"] == 1 + (tool.SAMPLE - 1) / 100


def test_duplicates_from_replay_are_dropped(tmp_path):
    with FakeApp(drain_at={10, 40}, replay_overlap=5) as app:
        report = run_tool(app, tmp_path)
    assert_all_complete(report)
    ws = report["ws"]
    assert ws["deduplicated"] >= 5 * ws["reconnects"] > 0


def test_a_gap_frame_is_counted(tmp_path):
    with FakeApp(drain_at={10}, maxlen=1) as app:
        report = run_tool(app, tmp_path, settle=1)
    ws = report["ws"]
    assert ws["gap_frames"] == ws["gap_reasons"]["trimmed"] > 0
    assert ws["gap_frames"] + ws["resumed_frames"] == ws["reconnects"]


def test_refused_reconnects_back_off_and_resume(tmp_path):
    with FakeApp(drain_at={10}, refuse_after_drain=1.2) as app:  # longer than any 4012 reconnect delay
        report = run_tool(app, tmp_path)
    assert_all_complete(report)
    ws = report["ws"]
    assert ws["connect_errors"]["status_503"] >= CLIENTS
    assert ws["reconnects"] == ws["resumed_frames"] == CLIENTS
    assert ws["gap_ms"]["p50"] >= 1000


async def first_frame(port: int, subprotocols: list[str] | None) -> tuple[str | None, str]:
    """The subprotocol selected for a websocket of the fake app and its first frame (ConnectionClosed if none)."""
    async with connect(
        f"ws://{SITE}/ws/deploy/svc/",
        origin=f"http://{SITE}",
        subprotocols=subprotocols,
        proxy=None,
        host="127.0.0.1",
        port=port,
    ) as connection:
        return connection.subprotocol, await asyncio.wait_for(connection.recv(), 5)


def test_the_fake_app_greets_a_connection_that_offers_the_grant():
    with FakeApp() as app:
        subprotocol, frame = asyncio.run(first_frame(app.port, ["deploy", f"grant.{GRANT}"]))
    assert subprotocol == "deploy" and json.loads(frame)["type"] == "hello"


@pytest.mark.parametrize("subprotocols", [None, ["deploy"], ["deploy", "grant.forged"]])
def test_a_connection_without_the_grant_is_closed_with_4403(subprotocols):
    with FakeApp() as app:
        with pytest.raises(ConnectionClosed) as closed:
            asyncio.run(first_frame(app.port, subprotocols))
    assert closed.value.rcvd.code == 4403 and app.refused_grants == 1


def test_a_refused_grant_ends_the_load_at_once_without_a_report(tmp_path):
    report = tmp_path / "report.json"
    with FakeApp() as app:
        command = [*tool_command(app, report, ()), "--grant=forged.grant"]  # the last --grant counts
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "not_granted" in result.stderr and "refused the grant (4403)" in result.stderr
    assert 1 <= app.refused_grants <= CLIENTS  # no client tried again
    assert elapsed < 5  # --connect-timeout: a refused grant is not waited out
    assert not report.exists()


def test_sigterm_ends_the_load_with_a_report(tmp_path):
    report = tmp_path / "report.json"
    with FakeApp() as app:
        process = subprocess.Popen(tool_command(app, report, ("--duration=60",)), stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while app.pushes < 10 and time.monotonic() < deadline:  # the load is under way
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "clients complete" in out
    assert_all_complete(json.loads(report.read_text()))


def test_no_balancer_exits_1_without_a_report(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    report = tmp_path / "report.json"
    command = [sys.executable, str(LOAD), f"--url=http://127.0.0.1:{port}", "--push-token=x", "--grant=x"]
    command += ["--duration=5", "--ws-clients=2", "--connect-timeout=1", f"--report={report}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "0/2 clients connected" in result.stderr
    assert not report.exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--ws-clients=2001"],
        ["--http-concurrency=201"],
        ["--push-rate=501"],
        ["--duration=3601"],
        ["--url=https://127.0.0.1:8443"],
        ["--service=no/slash"],
        ["--grant=two words"],
    ],
)
def test_bad_arguments_exit_2(options):
    arguments = ["--url=http://127.0.0.1:9", "--push-token=x", "--grant=x", "--duration=1", "--report=unused.json"]
    arguments += options
    with pytest.raises(SystemExit) as exited:
        tool.parse_args(arguments)
    assert exited.value.code == 2


def test_duration_or_stop_file_is_required():
    with pytest.raises(SystemExit) as exited:
        tool.parse_args(["--url=http://127.0.0.1:9", "--push-token=x", "--grant=x", "--report=unused.json"])
    assert exited.value.code == 2


def test_the_grant_is_required_and_read_from_the_environment(monkeypatch, capsys):
    arguments = ["--url=http://127.0.0.1:9", "--push-token=x", "--duration=1", "--report=unused.json"]
    monkeypatch.delenv("DEPLOY_GRANT", raising=False)
    with pytest.raises(SystemExit) as exited:
        tool.parse_args(arguments)
    assert exited.value.code == 2 and "give --grant or set DEPLOY_GRANT" in capsys.readouterr().err
    monkeypatch.setenv("DEPLOY_GRANT", GRANT)
    assert tool.parse_args(arguments)[0].grant == GRANT


def test_number_set():
    numbers = tool.NumberSet()
    for n in [1, 2, 3, 7, 5, 6, 10]:
        assert numbers.add(n)
    assert not numbers.add(6)
    assert (numbers.starts, numbers.ends, numbers.size) == ([1, 5, 10], [3, 7, 10], 7)
    assert numbers.add(4) and (numbers.starts, numbers.ends) == ([1, 10], [7, 10])
    assert numbers.count_in(list(range(1, 12))) == 8
    assert numbers.first_missing(list(range(1, 12)), 2) == [8, 9]
    assert 10 in numbers and 11 not in numbers


def test_percentile():
    percentile = tool.percentile
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50, 99, 100)
    assert percentile([], 99) is None


def test_client_drops_old_ids_and_counts_duplicates_and_reordering():
    client = tool.WsClient(0, tool.Target("http://127.0.0.1:9", SITE), "svc", GRANT, asyncio.Event())
    client.on_hello(json.dumps({"type": "hello", "service": "svc", "epoch": "e1", "last": "5-0"}))
    assert client.path() == "/ws/deploy/svc/?after=5-0&epoch=e1"

    def message(entry_id: str, number: int, **extra) -> None:
        frame = {"type": "message", "id": entry_id, "epoch": "e1", "message": f"push-{number}", **extra}
        client.on_frame(json.dumps(frame))

    message("4-0", 1)  # at or below the hello's position: dropped
    message("6-0", 1)
    message("6-0", 1, replay=True)  # replayed again: dropped
    message("7-0", 3)
    message("8-0", 2)  # out of order
    message("9-0", 3)  # the same push with a new id: a duplicate
    client.on_frame("not json")
    client.on_frame(json.dumps({"type": "gap", "replayed": 0, "reason": "epoch"}))
    assert (client.deduplicated, client.replayed, client.duplicates, client.out_of_order) == (2, 1, 1, 1)
    assert (client.malformed_frames, dict(client.gap_reasons)) == (1, {"epoch": 1})
    assert client.path() == "/ws/deploy/svc/?after=9-0&epoch=e1"
    verdict = client.verdict([1, 2, 3, 4])
    assert (verdict["complete"], verdict["missing"], verdict["first_missing"]) == (False, 1, [4])


def test_sleep_or_stop_sees_a_stop_even_without_time_to_wait():
    async def check() -> tuple[bool, bool]:
        stop = asyncio.Event()
        waited = await tool.sleep_or_stop(stop, 0.01)
        stop.set()
        return waited, await tool.sleep_or_stop(stop, -1)

    assert asyncio.run(check()) == (False, True)
