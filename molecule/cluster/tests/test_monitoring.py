"""Monitoring: Prometheus on the monitoring host (the balancer) scrapes every exporter and the app hosts' metrics;
N websocket clients show as N open websockets; a killed ASGI process and an app host out of the balancer fire their
alerts. Every check runs once, from the controller, asking Prometheus' HTTP API from inside the monitoring host."""

import json
import time
import uuid

from helpers import wait_for_status

WSPROBE = "/usr/local/bin/wsprobe"  # copied to the balancer by smoke.yml
API = (
    "import json, sys, urllib.parse, urllib.request\n"
    "query = urllib.parse.urlencode(json.loads(sys.argv[2]))\n"
    "print(urllib.request.urlopen(sys.argv[1] + ('?' + query if query else ''), timeout=10).read().decode())"
)
#: Every scrape job and its number of targets in the molecule cluster (1 balancer, 2 app hosts, 3 Redis hosts).
JOBS = {"prometheus": 1, "node": 6, "app": 2, "nginx": 2, "redis": 3, "sentinel": 3, "haproxy": 1}


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


def test_every_target_of_the_inventory_is_scraped_and_up(lb, lb_address):
    def targets():
        return api(lb, lb_address, "targets", state="active")["activeTargets"]

    def all_up():
        # The targets' health, and the same through a query, as an alert rule sees it.
        healthy = targets() and all(target["health"] == "up" for target in targets())
        return healthy and set(query(lb, lb_address, "up").values()) == {1.0}

    waited = wait_for("every target up", all_up, limit=60)
    found = {}
    for target in targets():
        found[target["labels"]["job"]] = found.get(target["labels"]["job"], 0) + 1
    print(f"\n{sum(found.values())} targets up after {waited:.1f} s: {found}")
    assert found == JOBS


def test_the_exporters_see_redis_its_sentinels_nginx_supervisor_and_uwsgi(lb, lb_address):
    masters = query(lb, lb_address, 'redis_instance_info{role="master"}')
    assert len(masters) == 1, masters
    assert len(query(lb, lb_address, 'redis_instance_info{role="slave"}')) == 2
    quorum = query(lb, lb_address, "redis_sentinel_master_ckquorum_status")
    assert len(quorum) == 3 and set(quorum.values()) == {1.0}, quorum
    status = query(lb, lb_address, 'redis_sentinel_master_status{master_status="ok"}')
    assert len(status) == 3, status
    assert query(lb, lb_address, "sum(nginx_connections_accepted)")
    assert query(lb, lb_address, 'sum(supervisor_program_up{program=~"daphne-.*"})') == {frozenset(): 4.0}
    assert query(lb, lb_address, "sum(uwsgi_up)") == {frozenset(): 2.0}
    assert query(lb, lb_address, "sum(uwsgi_requests_total) > 0")  # the balancer's health checks at least


def test_the_failover_alert_follows_the_master_addresses_the_sentinels_reported(lb, lb_address):
    # After test_failover.py (run before this module) the sentinels named two masters within the window: the alert
    # fires; on a cluster that never failed over it does not.
    window = "15m"  # monitoring_restart_window
    expression = f"count by (master_address) (last_over_time(redis_sentinel_master_status[{window}]))"
    addresses = [dict(labels)["master_address"] for labels in query(lb, lb_address, expression)]
    time.sleep(3)  # one evaluation of the rules after the samples the query saw
    alerts = [alert for alert in firing(lb, lb_address, "RedisFailover") if alert["state"] == "firing"]
    print(f"\nmasters named by the sentinels in the last {window}: {addresses}; RedisFailover firing: {bool(alerts)}")
    assert addresses
    assert bool(alerts) == (len(addresses) > 1), (addresses, alerts)


def test_n_websocket_clients_show_as_n_open_websockets(lb, lb_address, settings):
    clients, service = 6, "m-" + uuid.uuid4().hex[:10]
    url = f"ws://127.0.0.1:{settings['haproxy_listen_port']}/ws/deploy/{service}/"
    expression = f'sum(deploy_websockets_open{{service="{service}"}})'
    lb.check_output(
        "sh -c %s",
        f"for i in $(seq {clients}); do "
        f"{WSPROBE} listen {url} --count 1 --timeout 60 --ready-file /tmp/{service}.$i.ready > /dev/null 2>&1 & done",
    )

    def counted():
        return query(lb, lb_address, expression).get(frozenset())

    try:
        waited = wait_for(f"{clients} open websockets", lambda: counted() == clients, limit=30)
        per_host = query(lb, lb_address, f'sum by (host) (deploy_websockets_open{{service="{service}"}})')
        print(f"\n{clients} clients counted after {waited:.1f} s, per app host: "
              f"{ {dict(labels)['host']: value for labels, value in per_host.items()} }")  # fmt: skip
        assert len(per_host) == 2, per_host  # spread over both app hosts, added up over each host's processes
    finally:
        lb.run(f"pkill -f 'wsprobe listen {url}'")
    wait_for("no open websocket", lambda: counted() == 0, limit=30)


def test_a_killed_asgi_process_is_recorded_as_restarted_and_fires_program_restarted(apps, lb, lb_address):
    name = sorted(apps)[0]
    host = apps[name]
    started = f'supervisor_program_start_time_seconds{{host="{name}",program="daphne-0"}}'
    before_pid = host.check_output("supervisorctl pid daphne:daphne-0").strip()
    before = query(lb, lb_address, started)
    assert len(before) == 1, before
    host.check_output(f"kill -9 {before_pid}")
    recorded = wait_for(
        "the new start time in Prometheus",
        lambda: (query(lb, lb_address, started) or {None: 0}).popitem()[1] > max(before.values()),
        limit=60,
    )
    fired = wait_for(
        "ProgramRestarted firing",
        lambda: [
            a
            for a in firing(lb, lb_address, "ProgramRestarted", host=name, program="daphne-0")
            if a["state"] == "firing"
        ],  # fmt: skip
        limit=60,
    )
    pid = host.check_output("supervisorctl pid daphne:daphne-0").strip()
    print(f"\n{name} daphne-0 killed (pid {before_pid}, now {pid}): restart recorded after {recorded:.1f} s, "
          f"ProgramRestarted firing after {recorded + fired:.1f} s")  # fmt: skip
    assert pid not in ("0", before_pid)


def test_an_app_host_out_of_the_balancer_fires_host_out_of_balancer(apps, lb, lb_address):
    name = sorted(apps)[-1]
    assert not firing(lb, lb_address, "HostOutOfBalancer", server=name)
    try:
        apps[name].check_output("systemctl stop nginx")
        wait_for_status(lb, name, "DOWN", 30)
        waited = wait_for(
            "HostOutOfBalancer firing",
            lambda: [a for a in firing(lb, lb_address, "HostOutOfBalancer", server=name) if a["state"] == "firing"],
            limit=60,
        )
        print(f"\n{name}'s nginx stopped: HostOutOfBalancer firing {waited:.1f} s after HAProxy took it out")
    finally:
        apps[name].run("systemctl start nginx")
    wait_for_status(lb, name, "UP", 30)
    wait_for("HostOutOfBalancer resolved", lambda: not firing(lb, lb_address, "HostOutOfBalancer", server=name), 60)
