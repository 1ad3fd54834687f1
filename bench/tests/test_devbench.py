"""Unit checks of the benchmark runner's parts that need neither Docker nor a deployed stack.

fixtures/converge.json and fixtures/failed.json are ansible.posix.json output of two small playbooks run against
a host named bench-stack (connection local), trimmed to the keys the runner reads: a changed command that
notifies a handler, a loop where one item changes, a skipped task, an ok task, an ignored failure; and a play
whose second task fails.
"""

import argparse
import json
import socketserver
import sys
import threading
from pathlib import Path

import pytest
from devbench import http, playbook, report

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def recap(name):
    return playbook.Recap(playbook.parse((FIXTURES / name).read_text()))


def test_parse_skips_what_ansible_printed_before_the_document():
    text = (FIXTURES / "converge.json").read_text()
    assert playbook.parse("[WARNING]: something\n" + text) == json.loads(text)
    with pytest.raises(ValueError):
        playbook.parse("ERROR! the playbook could not be found\n")
    with pytest.raises(ValueError):
        playbook.parse("")


def test_changed_count_is_the_recap():
    assert recap("converge.json").changed("bench-stack") == 4
    assert recap("converge.json").changed("elsewhere") is None


def test_tasks_changed_and_skipped():
    run = recap("converge.json")
    assert run.task_count("bench-stack") == (6, 1)
    # A loop counts once, a handler under its own name, an ignored failure that reports a change too (as the recap).
    assert run.changed_tasks("bench-stack") == [
        "Changed command",
        "Loop with one change",
        "Failed ignored",
        "Restart thing",
    ]
    assert run.tasks("elsewhere") == []


def test_slowest_tasks_from_the_callback_timings():
    slowest = recap("converge.json").slowest("bench-stack", 3)
    assert [name for name, _ in slowest] == ["Changed command", "Loop with one change", "Failed ignored"]
    assert slowest[0][1] == pytest.approx(0.7, abs=0.05)  # the task sleeps 0.3 s; module start-up adds the rest
    assert all(a[1] >= b[1] for a, b in zip(slowest, slowest[1:]))


def test_task_seconds_with_and_without_microseconds():
    assert playbook._seconds({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01.500000Z"}) == 1.5
    assert playbook._seconds({"start": "2026-01-01T00:00:00.250000Z"}) == 0.0


def test_failures_name_host_task_and_message():
    assert recap("failed.json").failures() == ["bench-stack: Broken task: the template is broken"]
    assert recap("converge.json").failures() == ["bench-stack: Failed ignored: non-zero return code"]


def test_report_reproduces_the_committed_results():
    """The renderer writes the committed results.md from the committed JSON, line for line but the header."""
    data = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    written = report.render(data, "2026-01-01 00:00", 2).splitlines()
    committed = (RESULTS / "results.md").read_text().splitlines()
    assert written[2].startswith("Written by `bin/toolkit bench` (2026-01-01 00:00 UTC, 2 CPUs")
    assert len(written) == len(committed)
    assert written[:2] + written[3:] == committed[:2] + committed[3:]


def test_report_task_figures_and_an_unmeasured_image():
    provision = json.loads((RESULTS / "provision.json").read_text())
    provision.update(
        converge_tasks=180,
        converge_skipped=40,
        converge_slowest=[["app : Install the venv", 31.24], ["redis : Install Redis", 9.0]],
        rerun_tasks=170,
        rerun_skipped=45,
        rerun_slowest=[["app : Install the venv", 3.0]],
        rerun_changed_tasks=["uwsgi : Write the ini"],
    )
    image = {"measured": False, "reason": "playbooks/image.yml does not exist"}
    text = report.render({"provision": provision, "image": image}, "2026-01-01 00:00", 2)
    assert "The re-run changed: uwsgi : Write the ini." in text
    assert (
        "The converge ran 180 tasks (40 skipped); the slowest: app : Install the venv 31.2 s, "
        "redis : Install Redis 9.0 s." in text
    )
    assert "The re-run ran 170 tasks (45 skipped); the slowest: app : Install the venv 3.0 s." in text
    assert "Not measured: playbooks/image.yml does not exist." in text
    assert "## Websocket fan-out" not in text


def test_ratios_and_missing_values():
    assert report.ratio(3, 4) == "0.75"
    assert report.ratio(3, None) == "n/a"
    assert report.ms(None) == "n/a"


def test_wrk_report():
    out = """Running 4s test @ http://127.0.0.1:80/healthz
  1 threads and 8 connections
  Latency Distribution
     50%    1.10ms
     99%  812.00us
  25874 requests in 4.00s, 3.90MB read
  Non-2xx or 3xx responses: 2
  Socket errors: connect 0, read 1, write 0, timeout 3
Requests/sec:   6468.50

CPU 1.6
"""
    assert http.parse_wrk(out, 4) == {"rps": 6468.5, "p99_ms": pytest.approx(0.812), "errors": 6, "wrk_cpu": 0.4}


def test_direct_uwsgi_runs_the_deployed_layout():
    script = http.direct_uwsgi("/etc/proj/uwsgi.ini", "/opt/proj root", "web")
    assert " /etc/proj/uwsgi.ini > /tmp/bench-uwsgi.ini;" in script
    assert "--reuid=web --regid=\"$(id -g web)\" --init-groups '/opt/proj root/bin/run' " in script
    assert "'/opt/proj root/current/venv/bin/uwsgi' --ini /tmp/bench-uwsgi.ini" in script


def test_command_line(monkeypatch):
    import run

    monkeypatch.setattr(sys, "argv", ["run.py"])
    args = run.arguments()
    assert args.names == run.BENCHMARKS and args.configs == ["default", "baseline", "uvicorn-pubsub", "uvicorn-sansio"]
    monkeypatch.setattr(sys, "argv", ["run.py", "fanout", "--configs", "default,uvicorn-pubsub", "--clients", "100"])
    args = run.arguments()
    assert (args.names, args.configs, args.clients) == (["fanout"], ["default", "uvicorn-pubsub"], 100)
    for argv in (["run.py", "nonsense"], ["run.py", "fanout", "--configs", "nonsense"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            run.arguments()


def test_image_figures_from_the_result_file():
    from devbench import image

    ref = "devops-channels/bench-image:1-modern-abc"
    row = image.figures(148.2, {"ref": ref, "size": "282412345", "space": ["1G /"]})
    assert row == {"measured": True, "build_s": 148.2, "image": ref, "size_mb": 282, "space": ["1G /"]}
    assert image.figures(1.0, {"ref": "x", "size": 5_000_000})["size_mb"] == 5


def test_report_image_builds_side_by_side_with_the_goal():
    full = {"measured": True, "build_s": 150, "size_mb": 282, "start_s": [4.0, 5.0, 4.5], "start_median_s": 4.5}
    trimmed = dict(full, size_mb=190, start_s=[4.4, 4.6, 4.5], start_median_s=4.5, space=["100M /srv"])
    failed = {"measured": False, "reason": "playbooks/image.yml failed (exit 2)"}
    image = {"measured": True, "builds": {"full": full, "trimmed": trimmed, "other": failed}, "reason": ""}
    text = report.render({"image": image}, "2026-01-01 00:00", 2)
    assert "| full | 282 | 1.41 | 150 | 4.5 | 4.0, 5.0, 4.5 | 1.0 |" in text
    assert "| trimmed | 190 | 0.95 | 150 | 4.5 | 4.4, 4.6, 4.5 | 1.0 |" in text
    assert "| other | not measured: playbooks/image.yml failed (exit 2) |" in text
    assert "100M /srv" in text


# The cluster part (devbench/cluster.py): process labels, the balancer's stats, the report section.

TOP = [  # `docker top devops-cluster-app1 -eo pid,args`, trimmed
    (4944, "/lib/systemd/systemd"),
    (5055, "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"),
    (5056, "nginx: worker process"),
    (5074, "/srv/devops/venvs/43c/bin/python3 /srv/devops/current/venv/bin/daphne -u /run/devops/daphne-1.sock x:a"),
    (5073, "/srv/devops/venvs/43c/bin/python3 /srv/devops/current/venv/bin/daphne -u /run/devops/daphne-0.sock x:a"),
    (5075, "/srv/devops/venvs/43c/bin/python3 /srv/devops/current/venv/bin/uwsgi --ini /etc/devops/uwsgi.ini"),
    (5078, "/srv/devops/venvs/43c/bin/python3 /srv/devops/current/venv/bin/uwsgi --ini /etc/devops/uwsgi.ini"),
    (5044, "/usr/bin/python3 /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf"),
]


def test_cluster_labels_each_asgi_process_and_sums_the_rest():
    from devbench import cluster

    assert cluster.labels(TOP, "devops-cluster-app1") == {
        4944: "app1 other",
        5044: "app1 other",
        5055: "app1 nginx",
        5056: "app1 nginx",
        5073: "app1 daphne 0",
        5074: "app1 daphne 1",
        5075: "app1 uwsgi",
        5078: "app1 uwsgi",
    }
    uvicorn = [
        (9, "/srv/v/bin/python /srv/v/bin/uvicorn --fd 0 a:b"),
        (7, "/srv/v/bin/python /srv/v/bin/uvicorn --fd 0"),
    ]
    assert cluster.labels(uvicorn, "devops-cluster-app2") == {7: "app2 uvicorn 0", 9: "app2 uvicorn 1"}
    lb = [(1, "/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -p /run/haproxy.pid -S /run/haproxy-master.sock")]
    assert cluster.labels(lb, "devops-cluster-lb") == {1: "lb haproxy"}
    assert cluster.program("python3 -c import resource ... wrk -t1 -c16 -d4s http://127.0.0.1:80/healthz") == "wrk"
    assert cluster.program("/usr/bin/redis-server 0.0.0.0:6379") == "redis"
    shuffled = [
        "redis redis",
        "app2 uwsgi",
        "app1 daphne 10",
        "app1 daphne 2",
        "lb haproxy",
        "app1 other",
        "app1 nginx",
    ]
    assert sorted(shuffled, key=cluster.sort_key) == [
        "lb haproxy",
        "app1 nginx",
        "app1 daphne 2",
        "app1 daphne 10",
        "app1 other",
        "app2 uwsgi",
        "redis redis",
    ]


SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,hrsp_1xx,hrsp_2xx,hrsp_3xx
http,FRONTEND,,,3,10,4096,900,0,0,OPEN,0,880,0
app,devops-cluster-app1,0,0,2,8,,500,0,0,UP,0,490,0
app,devops-cluster-app2,0,0,0,8,,400,0,0,DRAIN,0,,0
app,BACKEND,0,0,2,10,410,900,0,0,UP,0,880,0
prometheus,FRONTEND,,,0,1,4096,0,0,0,OPEN,0,0,0

"""


def test_cluster_reads_the_balancers_stats():
    from devbench import cluster

    servers = cluster.parse_stat(SHOW_STAT)
    assert servers == {
        "devops-cluster-app1": {"status": "UP", "sessions": 2, "total": 500, "2xx": 490},
        "devops-cluster-app2": {"status": "DRAIN", "sessions": 0, "total": 400, "2xx": 0},
    }
    later = {k: dict(v, total=v["total"] + 101) for k, v in servers.items()}
    assert cluster.served(servers, later, "total") == {"app1": 101, "app2": 101}


def test_cluster_machine_busy_from_proc_stat(monkeypatch):
    from devbench import cluster

    monkeypatch.setattr(cluster.os, "sysconf", lambda name: 100)
    # user nice system idle iowait irq softirq steal guest guest_nice: busy = user + nice + system + irq + softirq
    text = "cpu  1000 10 500 9000 70 5 20 550 0 0\ncpu0 500 5 250 4500 35 2 10 275 0 0\n"
    assert cluster.machine_busy(text) == pytest.approx(15.35)


def test_cluster_medians_and_the_step_at_capacity():
    from devbench import cluster

    rounds = [
        {"rps": 900.0, "p99_ms": 9.0, "cpu": {"lb haproxy": 0.3, "app1 uwsgi": 0.9}, "answers": {"app1": 1}},
        {"rps": 1100.0, "p99_ms": 3.0, "cpu": {"lb haproxy": 0.5, "app1 uwsgi": 0.7}, "answers": {"app1": 3}},
        {"rps": 1000.0, "p99_ms": 5.0, "cpu": {"lb haproxy": 0.4, "app1 uwsgi": 0.8}, "answers": {"app1": 2}},
    ]
    assert cluster.median_row(rounds) == {
        "rps": 1000.0,
        "p99_ms": 5.0,
        "cpu": {"lb haproxy": 0.4, "app1 uwsgi": 0.8},
        "answers": {"app1": 2},
        "rounds": [900, 1100, 1000],
    }
    steps = [{"rate": 5, "ok": True}, {"rate": 8, "ok": True}, {"rate": 10, "ok": False}, {"rate": 13, "ok": False}]
    assert cluster.at_capacity({"steps": steps}) == {"rate": 8, "ok": True}
    assert cluster.at_capacity({"steps": steps[2:]}) is None


def cluster_step(rate, ok, app2):
    return {
        "rate": rate,
        "offered_per_s": rate * 200,
        "delivered_per_s": rate * 200,
        "delivered_pct": 100.0,
        "p50": 20.0,
        "p99": 100.0 if ok else 300.0,
        "max": 120.0,
        "server_cpu": {"lb haproxy": 0.1, "app1 daphne 0": 0.5, "app1 daphne 1": 0.4, "app2 daphne 0": app2},
        "server_us_per_delivery": 150.0,
        "sender_cpu": 0.02,
        "receiver_cpu": [0.05, 0.04],
        "machine_cpu": 1.5 + app2,
        "ok": ok,
    }


CLUSTER = {
    "clients": 200,
    "workers": 2,
    "p99_limit_ms": 250,
    "cpus": 2,
    "asgi": ["daphne"],
    "asgi_processes": 2,
    "uwsgi": {"app1": "4 x 2", "app2": "4 x 2"},
    "http_connections": 16,
    "http_seconds": 4,
    "fanout": {
        "one app host": {
            "capacity_per_s": 1000,
            "websockets": {"app1": 201, "app2": 0},
            "steps": [cluster_step(5, True, 0.0), cluster_step(8, False, 0.0)],
        },
        "two app hosts": {
            "capacity_per_s": 1600,
            "websockets": {"app1": 101, "app2": 100},
            "steps": [cluster_step(5, True, 0.3), cluster_step(8, True, 0.4)],
        },
    },
    "http": {
        "one app host": {
            "rps": 2000.0,
            "p99_ms": 12.5,
            "errors": 0,
            "wrk_cpu": 0.1,
            "cpu": {"lb haproxy": 0.2, "app1 uwsgi": 1.2, "app2 uwsgi": 0.0},
            "server_us_per_request": 700.0,
            "machine_cpu": 1.7,
            "answers": {"app1": 8000, "app2": 0},
            "rounds": [2000, 1900, 2100],
        },
        "two app hosts": {
            "rps": 2200.0,
            "p99_ms": 11.0,
            "errors": 0,
            "wrk_cpu": 0.1,
            "cpu": {"lb haproxy": 0.25, "app1 uwsgi": 0.7, "app2 uwsgi": 0.7},
            "server_us_per_request": 750.0,
            "machine_cpu": 1.95,
            "answers": {"app1": 4400, "app2": 4400},
            "rounds": [2200, 2250, 2150],
        },
    },
}


def test_report_cluster_side_by_side():
    text = report.render({"cluster": CLUSTER}, "2026-01-01 00:00", 2)
    assert "## Cluster: one app host against two, through the balancer" in text
    assert "| fan-out capacity, deliveries/s | 1000 | 1600 | 1.6 |" in text
    assert "| fan-out server CPU µs per delivery (all containers) | 150 | 150 | 1 |" in text
    assert "| fan-out websockets per app host (app1 / app2) | 201 / 0 | 101 / 100 |  |" in text
    assert "| HTTP requests/s | 2000 | 2200 | 1.1 |" in text
    assert "| HTTP requests/s of each round | 2000, 1900, 2100 | 2200, 2250, 2150 |  |" in text
    assert "| HTTP p99 ms | 12.5 | 11.0 |  |" in text
    assert "| HTTP answers per app host (app1 / app2) | 8000 / 0 | 4400 / 4400 |  |" in text
    # The CPU table: fan-out at the highest passing step (one host: 1000/s, two: 1600/s), HTTP's medians.
    assert (
        "| container | process | fan-out, one app host | fan-out, two app hosts | HTTP, one app host | "
        "HTTP, two app hosts |" in text
    )
    assert "| | load | 1000/s | 1600/s | 2000 req/s | 2200 req/s |" in text
    assert "| lb | haproxy | 0.10 | 0.10 | 0.20 | 0.25 |" in text
    assert "| app1 | daphne 1 | 0.40 | 0.40 |  |  |" in text
    assert "| app2 | daphne 0 | 0.00 | 0.40 |  |  |" in text
    assert "| app2 | uwsgi |  |  | 0.00 | 0.70 |" in text
    assert "| **all containers** | | 1.00 | 1.40 | 1.40 | 1.65 |" in text
    assert "| load generator | fan-out: sender + receivers; HTTP: wrk | 0.11 | 0.11 | 0.10 | 0.10 |" in text
    assert "| **these processes together** | | 1.11 | 1.51 | 1.50 | 1.75 |" in text
    assert "| **machine busy** | /proc/stat: every process and the kernel | 1.50 | 1.90 | 1.70 | 1.95 |" in text
    assert "| idle | of 2 CPUs | 0.50 | 0.10 | 0.30 | 0.05 |" in text
    assert (
        "| two app hosts | 1600 | 1600 | 100.00 | 20.0 | 100.0 | 120.0 | lb 0.10 app1 0.90 app2 0.40 | 1.90 | 0.02 |"
        in text
    )
    rows = [line for line in text.splitlines() if line.startswith("| lb |") or line.startswith("| app")]
    assert [line.split(" | ")[:2] for line in rows[:5]] == [
        ["| lb", "haproxy"],
        ["| app1", "daphne 0"],
        ["| app1", "daphne 1"],
        ["| app1", "uwsgi"],
        ["| app2", "daphne 0"],
    ]


def test_report_cluster_without_the_http_part():
    partial = dict(CLUSTER, http={})
    text = report.render({"cluster": partial}, "2026-01-01 00:00", 2)
    assert "| HTTP requests/s | n/a | n/a | n/a |" in text
    assert "| | load | 1000/s | 1600/s | n/a | n/a |" in text


def test_wsload_counts_message_frames_only():
    """Since the resume protocol each connection starts with a hello frame (and message frames carry the entry's id
    and epoch): the generator's regex matches the `b<step> <i> <time>` body of message frames only. An epoch is
    secrets.token_urlsafe (no spaces), an id "<ms>-<n>": neither can match it."""
    import asyncio

    import wsload

    def server_frame(document):
        payload = json.dumps(document).encode()
        assert len(payload) < 126
        return bytes([0x81, len(payload)]) + payload

    async def feed():
        stats = wsload.Stats()
        stats.reset(3)
        client = wsload.Client("localhost", "/ws/deploy/bench/", stats)
        ids = {"epoch": "b12Xy-Q_3kLm9a", "id": "1764480000000-0"}
        hello = {"type": "hello", "service": "bench", "epoch": ids["epoch"], "last": ids["id"]}
        message = {"type": "message", "message": "b3 0 1764480000.250000", "seq": 1, **ids}
        old = {"type": "message", "message": "b2 9 1764480000.100000", "seq": 2, **ids}
        handshake = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        data = (
            handshake + server_frame(hello) + server_frame({"type": "resumed", "replayed": 0}) + server_frame(message)
        )
        client.data_received(data[:50])
        client.data_received(data[50:] + server_frame(old))
        return client, stats

    client, stats = asyncio.run(feed())
    assert client.open.result() is True
    assert (stats.received, stats.late) == (1, 1)


def test_command_line_cluster_only_when_named(monkeypatch):
    import run

    monkeypatch.setattr(sys, "argv", ["run.py"])
    assert "cluster" not in run.arguments().names
    monkeypatch.setattr(sys, "argv", ["run.py", "cluster", "--clients", "100"])
    args = run.arguments()
    assert (args.names, args.clients) == (["cluster"], 100)


class Refusing(socketserver.StreamRequestHandler):
    """Answers every websocket handshake as the stack did with an exhausted Redis pool."""

    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_a_configuration_whose_handshakes_fail_is_reported_not_raised(monkeypatch):
    """`bench fanout` on a target that answers 500 records the failure and goes on (it died with a traceback)."""
    from devbench import fanout

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refusing) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        args = argparse.Namespace(clients=4, workers=1, start=100, factor=2, max_steps=2, step_seconds=0.2)
        result = fanout.sweep(server.server_address, args, {})
        server.shutdown()
    assert result["capacity_per_s"] == 0 and result["steps"] == []
    assert result["failed"].startswith("a websocket handshake failed: ConnectionError: HTTP/1.1 500")
    text = report.fanout(
        {
            "clients": 4,
            "workers": 1,
            "p99_limit_ms": 250,
            "configs": {
                "baseline": {**result, "server_errors": ["redis.exceptions.MaxConnectionsError: Too many connections"]}
            },
        }
    )
    assert "| baseline (**failed**) | 0 |" in "\n".join(text)
    assert (
        "- **baseline failed**: a websocket handshake failed: ConnectionError: HTTP/1.1 500 Internal Server Error. "
        "The ASGI servers logged: `redis.exceptions.MaxConnectionsError: Too many connections`." in text
    )


def test_wsload_offers_the_grant_as_a_subprotocol():
    import asyncio

    import wsload

    async def requests():
        with_grant = wsload.Client("localhost", "/ws/deploy/bench/", wsload.Stats(), "eyJzIjoiYiJ9.c2ln-_x")
        without = wsload.Client("localhost", "/ws/deploy/bench/", wsload.Stats())
        return with_grant.request.decode(), without.request.decode()

    with_grant, without = asyncio.run(requests())
    assert "\r\nSec-WebSocket-Protocol: deploy, grant.eyJzIjoiYiJ9.c2ln-_x\r\n" in with_grant
    assert with_grant.endswith("\r\n\r\n") and with_grant.count("\r\n\r\n") == 1
    assert "Sec-WebSocket-Protocol" not in without


class Ungranted(socketserver.StreamRequestHandler):
    """Accepts every websocket handshake and closes it at once with 4403, as the app does without a valid grant; keeps
    the subprotocols each client offered."""

    offered = []

    def handle(self):
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "sec-websocket-protocol":
                self.offered.append(value.strip())
        accept = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        self.wfile.write(accept + bytes([0x88, 2]) + (4403).to_bytes(2, "big"))
        self.rfile.read()  # until the client hangs up


def test_a_target_that_closes_the_clients_fails_the_configuration():
    from devbench import fanout

    Ungranted.offered = []
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Ungranted) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        args = argparse.Namespace(clients=4, workers=1, start=100, factor=2, max_steps=2, step_seconds=0.2)
        result = fanout.sweep(server.server_address, args, {}, grant="forged.grant")
        server.shutdown()
    assert Ungranted.offered == ["deploy, grant.forged.grant"] * 5  # 4 receivers and the sender
    assert result["capacity_per_s"] == 0 and result["steps"] == []
    assert result["failed"] == "the server closed websocket clients: 4403 x4 (4403: no valid grant)"
