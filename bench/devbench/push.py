"""Push latency to a connected websocket client (through nginx): the manage.py command and the HTTP API, each
beside the cost of its transport alone (`docker exec <c> true`, a `GET /healthz` round trip)."""

import asyncio
import json
import time
import urllib.request

import wsload

from .common import HOST, STACK, log, sh
from .target import container_ip, layout, mint_grant

KINDS = ("manage.py push", "floor: docker exec true", "HTTP push", "floor: GET /healthz via nginx")


def summary(samples):
    """Latencies in seconds (None: not received) -> the row of the table, in ms."""
    got = sorted(s * 1000 for s in samples if s is not None)
    return {
        "n": len(samples),
        "received": len(got),
        "p50_ms": got[len(got) // 2] if got else None,
        "max_ms": got[-1] if got else None,
        "min_ms": got[0] if got else None,
    }


async def latency(args):
    ip, stack = container_ip(STACK), layout()
    manage = f"{stack['app_user']}-manage"  # the app role's manage.py wrapper for operators
    stats = wsload.Stats()
    stats.reset(1)
    (client,) = await wsload.connect_all((ip, 80), HOST, "/ws/deploy/bench-push/", 1, stats, mint_grant())

    def http(method, path, body=None, auth=None):
        request = urllib.request.Request(f"http://{ip}{path}", data=body, method=method, headers={"Host": HOST})
        if auth:
            request.add_header("Authorization", f"Bearer {auth}")
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    async def run(kind, i):
        target = stats.received + 1  # before the push: its message may arrive before the command returns
        sent = time.time()
        message = f"b1 {i} {sent:.6f}"
        if kind == "manage.py push":
            await asyncio.to_thread(sh, "docker", "exec", STACK, manage, "push", "bench-push", message)
        elif kind == "HTTP push":
            body = json.dumps({"message": message}).encode()
            await asyncio.to_thread(http, "POST", "/api/push/bench-push/", body, stack["push_token"])
        elif kind == "floor: docker exec true":
            await asyncio.to_thread(sh, "docker", "exec", STACK, "true")
            return time.time() - sent
        elif kind == "floor: GET /healthz via nginx":
            await asyncio.to_thread(http, "GET", "/healthz")
            return time.time() - sent
        deadline = time.time() + 10
        while stats.received < target and time.time() < deadline:
            await asyncio.sleep(0.001)
        return stats.last if stats.received >= target else None  # receipt time minus push time

    rows = {}
    for kind in KINDS:
        rows[kind] = summary([await run(kind, i) for i in range(args.pushes)])
        log(f"push: {kind}: {rows[kind]}")
    client.close()
    return rows


def run(args):
    return asyncio.run(latency(args))
