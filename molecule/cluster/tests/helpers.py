"""Helpers of the cluster checks: HAProxy's runtime API, HTTP through the balancer, and load during an action."""

import csv
import http.client
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid

# Run on the balancer with its own python3: one command on the admin socket (Debian's path), the answer on stdout.
ADMIN = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect("/run/haproxy/admin.sock")
s.sendall(sys.argv[1].encode() + b"\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
sys.stdout.write(data.decode())
"""

# Run on a host with its own python3: GET URL with a Host header (and optional extra headers), prints the status.
GET = r"""
import http.client, json, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
c.request("GET", u.path + ("?" + u.query if u.query else ""), headers=json.loads(sys.argv[2]))
print(c.getresponse().status)
"""


def admin(lb, command):
    return lb.check_output("python3 -c %s %s", ADMIN, command)


def servers(lb, backend="app"):
    """{server name: row of `show stat`} of the backend (status, scur, stot, ...)."""
    text = admin(lb, "show stat").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row for row in rows if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def get_from(host, url, headers):
    """Status of a GET sent from inside `host`."""
    return int(host.check_output("python3 -c %s %s %s", GET, url, json.dumps(headers)))


def get(address, port, path="/", host="localhost", timeout=5):
    """Status of a GET from the controller (new connection each time); raises OSError on a failed connection."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def grant(apps, settings, pattern, *options):
    """A grant for the services matching `pattern` from the app of the first app host (`<devops_user>-manage grant`;
    `options`: --write to send too, --seconds N). Websocket clients offer it (wsprobe: WSPROBE_GRANT)."""
    manage = f"/usr/local/bin/{settings['devops_user']}-manage"
    return apps[sorted(apps)[0]].check_output("%s grant %s" + " %s" * len(options), manage, pattern, *options)


def wait_for_status(lb, name, status, limit):
    """Seconds until `show stat` reports server `name` in `status` (UP, DOWN); fails after `limit` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if servers(lb)[name]["status"].split()[0] == status:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{name} not {status} after {limit} s: {servers(lb)[name]['status']}")


PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LOAD = os.path.join(PROJECT, "tests", "cluster", "load.py")
WS_CLIENTS, HTTP_CONCURRENCY, PUSH_RATE = 50, 20, 20
LOAD_SERVICES = "load-*"  # the services under_load's clients listen to (conftest.py's site has a grant for them)


def under_load(site, tmp_path, label, action):
    """Run `action()` while the load runs; returns (seconds the action took, the load's report)."""
    stop, report = tmp_path / f"stop-{label}", tmp_path / f"report-{label}.json"
    load = subprocess.Popen(
        [
            sys.executable,
            LOAD,
            "--url",
            site["url"],
            "--host",
            site["host"],
            "--service",
            f"load-{re.sub('[^A-Za-z0-9]+', '-', label)}-{uuid.uuid4().hex[:6]}",
            "--ws-clients",
            str(WS_CLIENTS),
            "--http-concurrency",
            str(HTTP_CONCURRENCY),
            "--http-path",
            "/healthz",
            "--http-pause",
            "0.05",
            "--push-rate",
            str(PUSH_RATE),
            "--push-token",
            site["token"],
            "--stop-file",
            str(stop),
            "--settle",
            "20",
            "--report",
            str(report),
        ],
        env={**os.environ, "DEPLOY_GRANT": site["grant"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(8)  # every client connected and the pushes flowing before the action starts
        assert load.poll() is None, load.stdout.read()
        seconds = action()
        time.sleep(3)  # a few pushes after the action too
    finally:
        stop.touch()
        output, _ = load.communicate(timeout=120)
    print(f"\n--- {label}: load during the action ---\n{output}")
    assert load.returncode == 0, output
    return seconds, json.loads(report.read_text())


def summary(label, seconds, report):
    ws, http, push = report["ws"], report["http"], report["push"]
    gap = ws["gap_ms"]
    return (
        f"{label}: {seconds:.0f} s; HTTP {http['ok']}/{http['requests']} ok, {http['failed']} failed "
        f"{http['failures_by_kind']}; pushes {push['acknowledged']}/{push['sent']} acknowledged; websocket clients "
        f"{ws['clients_complete']}/{ws['clients']} complete, reconnects {ws['reconnects']} {ws['close_codes']}, "
        f"reconnect gap max {gap['max']} ms p99 {gap['p99']} ms, replayed {ws['replayed']}, gap frames "
        f"{ws['gap_frames']}, missing {ws['missing_total']}, duplicates {ws['duplicates_total']}, out of order "
        f"{ws['out_of_order_total']}"
    )


def playbook(name, *extra):
    """Run playbooks/<name> against the whole cluster as the README does; returns (seconds, completed process)."""
    started = time.monotonic()
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            os.path.join(PROJECT, "playbooks", name),
            *extra,
        ],
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return time.monotonic() - started, result


# --- Prometheus on the monitoring host -----------------------------------------------------------------------

API = (
    "import json, sys, urllib.parse, urllib.request\n"
    "query = urllib.parse.urlencode(json.loads(sys.argv[2]))\n"
    "print(urllib.request.urlopen(sys.argv[1] + ('?' + query if query else ''), timeout=10).read().decode())"
)


def api(lb, lb_address, path, **params):
    """The `data` of a Prometheus API answer."""
    out = lb.check_output("python3 -c %s %s %s", API, f"http://{lb_address}:9090/api/v1/{path}", json.dumps(params))
    answer = json.loads(out)
    assert answer["status"] == "success", answer
    return answer["data"]


def query(lb, lb_address, expression):
    """{frozenset(labels): value} of an instant query."""
    return {
        frozenset(row["metric"].items()): float(row["value"][1])
        for row in api(lb, lb_address, "query", query=expression)["result"]
    }


def wait_for(what, check, limit, pause=1.0):
    """Seconds until `check()` returns a true value; fails with the last value after `limit` seconds."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(f"{what}: not after {limit} s (last: {value!r})")
        time.sleep(pause)


def firing(lb, lb_address, name, **labels):
    """The alerts named `name` whose labels include `labels`, with their state (pending, firing)."""
    alerts = api(lb, lb_address, "alerts")["alerts"]
    return [
        alert for alert in alerts if alert["labels"]["alertname"] == name and labels.items() <= alert["labels"].items()
    ]


# --- the app's websocket count -------------------------------------------------------------------------------------

WSPROBE = "/usr/local/bin/wsprobe"  # copied to the balancer by smoke.yml
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def app_pages(lb, lb_address, service):
    """What each app host's metrics page says of `service` now, read by the balancer at the scrape URL."""
    pages = {}
    for target in api(lb, lb_address, "targets", state="active")["activeTargets"]:
        if target["labels"]["job"] == "app":
            page = lb.run("python3 -c %s %s", FETCH, target["scrapeUrl"])
            lines = [line for line in page.stdout.splitlines() if f'service="{service}"' in line]
            pages[target["labels"]["host"]] = {"health": target["health"], "lines": lines or page.stderr[-300:]}
    return pages


def count_open_websockets(lb, apps, lb_address, settings, clients):
    """Connect `clients` websocket listeners (with a grant to read) through the balancer to a new service, wait until
    Prometheus adds them up to `clients` over both app hosts, close them and wait for 0. On failure the listeners'
    output and each app host's own page are in the message."""
    service = "m-" + uuid.uuid4().hex[:10]
    url = f"ws://127.0.0.1:{settings['haproxy_listen_port']}/ws/deploy/{service}/"
    expression = f'sum(deploy_websockets_open{{service="{service}"}})'
    token = grant(apps, settings, service)
    lb.check_output(
        "sh -c %s",
        f"export WSPROBE_GRANT={token}; for i in $(seq {clients}); do "
        f"{WSPROBE} listen {url} --count 1 --timeout 60 --ready-file /tmp/{service}.$i.ready "
        f"> /tmp/{service}.$i.out 2>&1 & done",
    )

    def counted():
        return query(lb, lb_address, expression).get(frozenset())

    def diagnosis():
        outputs = lb.run(f"tail -n 3 /tmp/{service}.*.out /dev/null").stdout
        return f"\nlisteners:\n{outputs}\napp hosts' pages now: {app_pages(lb, lb_address, service)}"

    try:
        ready = f"ls /tmp/{service}.*.ready 2>/dev/null | wc -l"
        try:
            wait_for(f"{clients} listeners connected", lambda: lb.check_output(ready).strip() == str(clients), 30)
            waited = wait_for(f"{clients} open websockets (Prometheus)", lambda: counted() == clients, limit=30)
        except AssertionError as error:
            raise AssertionError(f"{error}{diagnosis()}") from None
        per_host = query(lb, lb_address, f'sum by (host) (deploy_websockets_open{{service="{service}"}})')
        print(f"\n{clients} clients counted after {waited:.1f} s, per app host: "
              f"{ {dict(labels)['host']: value for labels, value in per_host.items()} }")  # fmt: skip
        assert len(per_host) == len(apps), per_host  # spread over the app hosts, added up over each host's processes
    finally:
        lb.run(f"pkill -f 'wsprobe listen {url}'")
    wait_for("no open websocket", lambda: counted() == 0, limit=30)
    return waited
