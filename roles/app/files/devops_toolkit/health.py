"""The health path, answered before the project sees the request (``app_health_served: toolkit``).

``DEVOPS_HEALTH_PATH`` (set by ``bin/run``) names it; empty means the project answers it. The answer
says only that the process is up and Django is set up: what the rolling restart and a load balancer
need to know before they send it traffic.
"""

import os

PATH = os.environ.get("DEVOPS_HEALTH_PATH", "")
BODY = b"ok\n"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


def is_health_request(path):
    return bool(PATH) and path == PATH
