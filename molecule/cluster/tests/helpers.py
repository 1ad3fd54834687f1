"""Helpers of the cluster checks: HAProxy's runtime API and HTTP through the balancer."""

import csv
import http.client
import io
import json
import time

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


def wait_for_status(lb, name, status, limit):
    """Seconds until `show stat` reports server `name` in `status` (UP, DOWN); fails after `limit` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if servers(lb)[name]["status"].split()[0] == status:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{name} not {status} after {limit} s: {servers(lb)[name]['status']}")
