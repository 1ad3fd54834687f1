"""nginx's per-client limits (role nginx: nginx_api_rate, nginx_ws_handshake_rate, nginx_ws_connections_per_client),
tried from inside each host by two clients: the host's network address floods, the loopback is the other client.

The figures come from the deployed nginx configuration, so the checks follow the host's values.
"""

import json
import os
import re
import shlex
import time

import pytest
from helpers import WS, frames

PROBE = open(os.path.join(os.path.dirname(__file__), "limits_probe.py")).read()


@pytest.fixture(scope="module")
def nginx_config(host):
    return host.check_output("nginx -T 2>/dev/null")


@pytest.fixture(scope="module")
def attacker(host):
    """The host's own network address: to nginx a client other than the loopback."""
    return host.check_output("hostname -I").split()[0]


def rate_limit(config, zone):
    """(requests per second, burst) of the site's limit_req `zone` (api, ws_handshakes)."""
    rate = re.search(rf"zone=\w+_{zone}:\S+ rate=(\d+)r/s;", config)
    burst = re.search(rf"limit_req zone=\w+_{zone} burst=(\d+) nodelay;", config)
    assert rate and burst, f"nginx has no {zone} limit"
    return int(rate[1]), int(burst[1])


def probe(host, *args, grant=""):
    """Run limits_probe.py on the host; its websockets offer `grant`."""
    out = host.check_output("LIMITS_PROBE_GRANT=%s python3 -c %s" + " %s" * len(args), grant, PROBE, *map(str, args))
    result = json.loads(out)
    if "statuses" in result:
        result["statuses"] = {int(status): n for status, n in result["statuses"].items()}
    return result


def push_token(host, layout):
    """The app's push token from its env file ("" for a project without the push endpoint)."""
    env = host.file(layout["env_file"]).content_string
    match = re.search(r"^DEPLOY_PUSH_TOKEN=(.*)$", env, re.M)
    return match[1].strip().strip("'\"") if match else ""


def test_a_client_flooding_the_api_gets_429_and_the_others_are_served(host, layout, nginx_config, attacker, service):
    rate, burst = rate_limit(nginx_config, "api")
    path = f"/api/push/{service}/"
    flood = probe(host, "requests", attacker, path, burst + 4 * rate + 100)
    served = sum(n for status, n in flood["statuses"].items() if status != 429)
    # nginx serves the burst at once and then `rate` a second: the rest never reaches the app.
    assert flood["statuses"].get(429, 0) > 0, flood
    assert served <= burst + rate * flood["seconds"] + 2, flood
    # Without a limit (any path outside nginx_api_urls) the same flood reaches the app every time.
    unlimited = probe(host, "requests", attacker, f"/{service}-not-an-api/", burst + 4 * rate + 100)
    assert 429 not in unlimited["statuses"], unlimited
    # Another client meanwhile: served by the app (202 with the push token; a project without the push endpoint
    # answers its own 404).
    token = push_token(host, layout)
    other = probe(host, "requests", "127.0.0.1", path, 1, token)
    assert other["statuses"] == {202 if token else 404: 1}, other
    # A limit on the rate: the flooding client is served again once it slows down.
    host.run("sleep %s", str(burst / rate + 1))
    again = probe(host, "requests", attacker, path, 1, token)
    assert 429 not in again["statuses"], again


def test_a_client_opening_websockets_too_fast_gets_429_and_the_others_are_served(
    host, nginx_config, attacker, service, grant
):
    rate, burst = rate_limit(nginx_config, "ws_handshakes")
    path = f"/ws/deploy/{service}/"
    storm = probe(host, "handshakes", attacker, path, burst + 4 * rate + 50, grant=grant)
    assert set(storm["statuses"]) == {101, 429}, storm
    assert storm["statuses"][101] <= burst + rate * storm["seconds"] + 2, storm
    assert probe(host, "handshakes", "127.0.0.1", path, 1, grant=grant)["statuses"] == {101: 1}
    host.run("sleep %s", str(burst / rate + 1))
    assert probe(host, "handshakes", attacker, path, 1, grant=grant)["statuses"] == {101: 1}


def test_a_client_holding_too_many_websockets_gets_429_and_the_others_are_served(
    host, nginx_config, attacker, service, grant
):
    limit = re.search(r"limit_conn \w+_ws_connections (\d+);", nginx_config)
    assert limit, "nginx has no limit on a client's websockets"
    rate, burst = rate_limit(nginx_config, "ws_handshakes")
    # Open the limit's worth (pacing the handshakes), wait until the handshake budget is whole again, try one more.
    # With the grant: a websocket the app refuses is closed at once and would free its place.
    held = probe(host, "hold", attacker, f"/ws/deploy/{service}/", int(limit[1]), burst / rate + 1, grant=grant)
    assert held["opened"] == int(limit[1]), held
    assert held["other_client"] == 101, held
    assert held["over_the_limit"] == 429, held
    assert held["after_closing_one"] == 101, held


def asgi_pids(host, layout):
    """The ASGI processes' pids (`supervisorctl pid` takes no group:*)."""
    status = host.run("supervisorctl status %s", f"{layout['program']}:*").stdout
    return re.findall(r"\bpid (\d+),", status)


def asgi_rss(host, layout):
    """Resident memory of the ASGI processes together, in bytes."""
    pids = asgi_pids(host, layout)
    assert pids, "no ASGI process running"
    return sum(int(kb) for kb in host.check_output("ps -o rss= -p %s", ",".join(pids)).split()) * 1024


def test_clients_that_do_not_read_leave_the_asgi_processes_memory_bounded(host, layout, service, grant, wsprobe):
    if not push_token(host, layout):
        pytest.skip("a project without the bundled app's pushes")
    clients, pushes = 10, 300
    size = min(60_000, int(layout["max_message"]) - 1024)
    manage, ready = f"{layout['project']}-manage", f"/tmp/{service}.idle.ready"
    # The bound: what each client may leave unread in the server, plus a full channel queue per process (the pub/sub
    # layer's is in the process), plus room for the processes' own allocations. Without the bounds the processes
    # hold every message sent to every client: clients * pushes * size, 180 MB here.
    processes = len(asgi_pids(host, layout))
    bound = clients * (int(layout["send_buffer_limit"]) + size) + processes * int(layout["channel_capacity"]) * size
    bound += 32 * 2**20
    before = asgi_rss(host, layout)
    host.check_output(
        "sh -c %s",
        f"LIMITS_PROBE_GRANT={grant} python3 -c {shlex.quote(PROBE)} idle 127.0.0.1 /ws/deploy/{service}/ {clients} 90 "
        f"{ready} "
        f"> /tmp/{service}.idle.out 2>&1 &",
    )
    try:
        host.check_output("sh -c %s", f"for i in $(seq 300); do [ -e {ready} ] && exit 0; sleep 0.1; done; exit 1")
        push = (
            "from deploy.push import send_channel_msg\n"
            f"for i in range({pushes}): send_channel_msg({service!r}, str(i % 10) * {size})"
        )
        started = time.monotonic()
        host.check_output("%s shell -c %s", manage, push)
        pushed = time.monotonic() - started
        # Until the processes stop growing: what they hold for the idle clients.
        samples = [asgi_rss(host, layout)]
        for _ in range(30):
            time.sleep(1)
            samples.append(asgi_rss(host, layout))
            if len(samples) >= 4 and max(samples[-4:]) - min(samples[-4:]) < 2**20:
                break
        growth = samples[-1] - before
        # Meanwhile a client that reads is served: a push to another service reaches it.
        other = f"{service}-reader"
        received = host.check_output(
            "bash -c %s",
            f"cd /tmp; {wsprobe} listen {WS.format(service=other)} --count 1 --timeout 30 "
            f"--ready-file {other}.ready > {other}.out & "
            f"for i in $(seq 100); do [ -e {other}.ready ] && break; sleep 0.1; done; "
            f"echo served | {manage} push {other} - >/dev/null; wait; cat {other}.out",
        )
    finally:
        host.run("pkill -f %s", f"idle 127.0.0.1 /ws/deploy/{service}/")
    print(
        f"\n{clients} clients not reading, {pushes} pushes of {size} bytes ({clients * pushes * size / 2**20:.0f} MiB "
        f"for them) in {pushed:.1f} s: {layout['program']} processes {before / 2**20:.0f} -> "
        f"{samples[-1] / 2**20:.0f} MiB (+{growth / 2**20:.1f} MiB, bound {bound / 2**20:.0f} MiB)"
    )
    assert growth < bound, (growth, bound)
    assert [f["message"] for f in frames(received)] == ["served"]
