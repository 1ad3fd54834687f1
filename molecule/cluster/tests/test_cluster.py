"""The cluster through its balancer: configuration, balancing over both app hosts, websockets across hosts, the
client's address in nginx's log, the HAProxy exporter's bind, shared Redis, and an app host's nginx stopped and
started under requests. Every check runs once, from the controller (no `host` fixture)."""

import threading
import time
import uuid

from helpers import WSPROBE, admin, count_open_websockets, get, get_from, grant, servers, wait_for_status

# --- configuration -------------------------------------------------------------------------------------------


def test_haproxy_accepts_its_configuration(lb):
    assert lb.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0
    assert lb.service("haproxy").is_running and lb.service("haproxy").is_enabled


def test_the_timeouts_follow_the_websocket_lifetime(lb, settings):
    config = lb.file("/etc/haproxy/haproxy.cfg").content_string
    assert int(settings["haproxy_tunnel_timeout"]) == int(settings["devops_websocket_timeout"])
    assert f"timeout tunnel {settings['devops_websocket_timeout']}s" in config
    assert "timeout client-fin " in config and "balance leastconn" in config


def test_the_admin_socket_is_at_debians_path(lb):
    socket = lb.file("/run/haproxy/admin.sock")
    assert socket.is_socket and socket.mode == 0o660 and socket.group == "haproxy"
    assert "Name: HAProxy" in admin(lb, "show info")


def test_both_app_hosts_are_up(lb, apps):
    assert {name: row["status"] for name, row in servers(lb).items()} == {name: "UP" for name in apps}
    assert all(row["check_status"] == "L7OK" for row in servers(lb).values())


def test_prometheus_exporter_answers_on_its_bind_only(lb, groups, lb_address):
    # With a monitoring group (this cluster) on the private address, where the monitoring host scrapes it; else on
    # loopback only (group_vars: haproxy_prometheus_bind).
    port = "8405"
    private = bool(groups.get("monitoring"))
    bind, other = (f"{lb_address}:{port}", "127.0.0.1") if private else (f"127.0.0.1:{port}", lb_address)
    metrics = lb.check_output(
        "python3 -c %s %s",
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
        f"http://{bind}/metrics",
    )
    assert "haproxy_process_" in metrics and 'proxy="app"' in metrics
    outside = lb.run(
        "python3 -c %s %s %s",
        "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)",
        other,
        port,
    )
    assert outside.rc != 0 and "refused" in outside.stderr.lower()
    listeners = lb.check_output(f"ss -Hltn 'sport = :{port}'").split()
    assert f"{bind}" in listeners, listeners


# --- traffic through the balancer ----------------------------------------------------------------------------


def test_requests_are_spread_over_both_app_hosts(lb, apps, lb_address, settings):
    before = {name: int(row["stot"]) for name, row in servers(lb).items()}
    statuses = [get(lb_address, settings["haproxy_listen_port"]) for _ in range(20)]
    after = {name: int(row["stot"]) for name, row in servers(lb).items()}
    served = {name: after[name] - before[name] for name in apps}
    print(f"\n20 GET / through the balancer: {statuses.count(200)} x 200, served per app host {served}")
    assert statuses == [200] * 20
    # leastconn with equal loads takes turns.
    assert all(count >= 8 for count in served.values()), served


def test_a_websocket_message_crosses_app_hosts(lb, apps, settings):
    """A listener and a sender through the balancer land on different app hosts (leastconn); the message reaches
    the listener through the shared Redis. Both offer a grant that may send: clients may send to c-* (host_vars)."""
    port, service, ready = settings["haproxy_listen_port"], "c-" + uuid.uuid4().hex[:10], "/tmp/wsprobe-ready"
    url = f"ws://127.0.0.1:{port}/ws/deploy/{service}/"
    message = "across-" + uuid.uuid4().hex
    token = grant(apps, settings, service, "--write")
    before = {name: int(row["stot"]) for name, row in servers(lb).items()}
    script = (
        f"export WSPROBE_GRANT={token}; rm -f {ready}; "
        f"{WSPROBE} listen {url} --count 1 --timeout 20 --ready-file {ready} > /tmp/wsprobe-out & "
        f"for i in $(seq 100); do [ -e {ready} ] && break; sleep 0.1; done; "
        f"{WSPROBE} send {url} {message} >/dev/null; wait; cat /tmp/wsprobe-out"
    )
    out = lb.check_output("sh -c %s", script)
    after = {name: int(row["stot"]) for name, row in servers(lb).items()}
    print(f"\nwebsocket listener and sender per app host: { {n: after[n] - before[n] for n in apps} }")
    assert message in out
    assert all(after[name] - before[name] == 1 for name in apps), (before, after)


def test_nginx_logs_the_clients_address_not_the_balancers(lb, apps, redis, lb_address, settings):
    """A request from the Redis host (a client of its own) with a forged X-Forwarded-For: nginx logs the address the
    balancer saw, never the balancer's own nor the forged one."""
    client = redis.check_output("hostname -I").split()[0]
    probe = uuid.uuid4().hex
    url = f"http://{lb_address}:{settings['haproxy_listen_port']}/healthz?probe={probe}"
    assert get_from(redis, url, {"Host": "localhost", "X-Forwarded-For": "203.0.113.9"}) == 200
    logged = []
    for host in apps.values():
        logged += host.run("grep -h %s /var/log/nginx/access.log", probe).stdout.splitlines()
    assert len(logged) == 1, logged
    assert logged[0].split()[0] == client != lb_address, (logged, client, lb_address)


PING = (
    "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); s.sendall(b'PING\\r\\n'); "
    "print(s.recv(100).decode())"
)


def test_redis_and_its_sentinels_serve_the_app_hosts_with_passwords_only(redis_hosts, apps):
    for name, host in redis_hosts.items():
        for port in ("6379", "26379"):
            listeners = {
                line.split()[3].rsplit(":", 1)[0]
                for line in host.check_output("ss -Hltn 'sport = :%s'", port).splitlines()
            }
            private = host.check_output("hostname -I").split()[0]
            assert listeners - {"[::1]"} == {"127.0.0.1", private}, (name, port, listeners)
    for host in apps.values():
        env = host.file("/etc/devops/devops.env").content_string
        assert "REDIS_HOST=" not in env and "REDIS_URL=" not in env
        sentinels = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("REDIS_SENTINELS="))
        assert sorted(item.rsplit(":", 1)[0] for item in sentinels.strip("'\"").split(",")) == sorted(redis_hosts)
        for name in redis_hosts:
            for port in ("6379", "26379"):
                assert "NOAUTH" in host.check_output("python3 -c %s %s %s", PING, name, port), (name, port)


# --- an app host fails and comes back ------------------------------------------------------------------------


class Load(threading.Thread):
    """Sequential GETs through the balancer until stopped; counts answers and failures."""

    def __init__(self, address, port):
        super().__init__(daemon=True)
        self.address, self.port = address, port
        self.stop, self.ok, self.failures = threading.Event(), 0, []

    def run(self):
        while not self.stop.is_set():
            try:
                status = get(self.address, self.port, "/healthz")
            except OSError as error:
                status = repr(error)
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(status)
            time.sleep(0.02)


def test_a_stopped_app_host_leaves_and_rejoins_the_balancer(lb, apps, lb_address, settings):
    name = sorted(apps)[0]
    interval = int(settings["haproxy_check_interval"]) / 1000
    # Each failed check takes up to the check timeout (a vanished host answers nothing), then the next interval.
    check_timeout = int(settings["haproxy_check_timeout"]) / 1000
    down_limit = (interval + check_timeout) * int(settings["haproxy_check_fall"]) + interval + 2
    up_limit = interval * int(settings["haproxy_check_rise"]) + interval + 2
    load = Load(lb_address, settings["haproxy_listen_port"])
    load.start()
    try:
        time.sleep(1)
        apps[name].check_output("systemctl stop nginx")
        down_after = wait_for_status(lb, name, "DOWN", down_limit)
        time.sleep(2)  # requests keep coming while the host is out
        apps[name].check_output("systemctl start nginx")
        up_after = wait_for_status(lb, name, "UP", up_limit)
        time.sleep(1)
    finally:
        load.stop.set()
        load.join(15)
        apps[name].run("systemctl start nginx")
    print(
        f"\n{name}: DOWN after {down_after:.1f} s (limit {down_limit:.1f} s), UP again after {up_after:.1f} s; "
        f"requests through the balancer meanwhile: {load.ok} x 200, {len(load.failures)} failed {load.failures[:5]}"
    )
    assert load.ok > 20
    # Only requests in flight when nginx stopped may fail (nginx finishes them; HAProxy redispatches refused ones).
    assert len(load.failures) <= 2, load.failures
    assert {row["status"] for row in servers(lb).values()} == {"UP"}


# --- metrics ---------------------------------------------------------------------------------------------------


def test_n_websocket_clients_show_as_n_open_websockets(lb, apps, lb_address, settings):
    count_open_websockets(lb, apps, lb_address, settings, clients=6)
