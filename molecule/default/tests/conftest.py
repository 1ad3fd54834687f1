"""Shared helpers for the stack's testinfra checks (they run inside each converged host)."""

import json
import uuid

import pytest

APP_ROOT = "/srv/devops"
ENV_FILE = "/etc/devops/devops.env"
RUN_DIR = "/run/devops"
WS = "ws://localhost/ws/deploy/{service}/"


@pytest.fixture
def service():
    """A fresh service name, so tests never see each other's messages."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def daphne_count(host):
    status = host.check_output("supervisorctl status")
    return sum(1 for line in status.splitlines() if line.startswith("daphne:"))


def frames(output):
    """The JSON frames a wsprobe run printed, one per line."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def http_get(host, path, unix=None):
    """GET through nginx (or a unix socket) from inside the host; returns (status, headers, body)."""
    script = r"""
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(10); self.sock.connect(sys.argv[2])
conn = Unix("localhost") if sys.argv[2] else http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
conn.request("GET", sys.argv[1], headers={"Host": "localhost"})
r = conn.getresponse()
print(json.dumps({"status": r.status, "headers": dict(r.getheaders()), "body": r.read().decode(errors="replace")}))
"""
    out = host.check_output("python3 -c %s %s %s", script, path, unix or "")
    data = json.loads(out)
    return data["status"], data["headers"], data["body"]


def uwsgi_requests(host):
    """Total requests served by uwsgi's workers, read from its stats socket."""
    script = r"""
import json, socket
s = socket.socket(socket.AF_UNIX); s.connect("/run/devops/uwsgi-stats.sock")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(sum(w["requests"] for w in json.loads(data)["workers"]))
"""
    return int(host.check_output("python3 -c %s", script))
