"""Monitoring: Prometheus on the monitoring host (the balancer) scrapes every exporter and the app hosts' metrics;
the failovers of test_failover.py, a killed ASGI process and an app host out of the balancer fire their alerts; N
websocket clients are counted as N again after the failovers (before them: test_cluster.py). Every check runs once,
from the controller, asking Prometheus' HTTP API from inside the monitoring host."""

import time

from helpers import api, count_open_websockets, firing, query, wait_for, wait_for_status

#: Every scrape job and its number of targets in the molecule cluster (1 balancer, 2 app hosts, 3 Redis hosts).
JOBS = {"prometheus": 1, "node": 6, "app": 2, "nginx": 2, "redis": 3, "sentinel": 3, "haproxy": 1}


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


def test_n_websocket_clients_are_counted_after_the_failovers(lb, apps, lb_address, settings):
    # The app hosts' channel layer moved to a new master three times (test_failover.py): new websockets still join
    # their groups and every ASGI process still reports them.
    count_open_websockets(lb, apps, lb_address, settings, clients=6)


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
