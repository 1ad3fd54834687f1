"""Redis failover under load: the master's redis-server stopped, killed with SIGKILL, and its container paused (a
partition). Each time Sentinel promotes a replica, pushes flow again, and no acknowledged push is lost: every client
ends with every one of them (the resume protocol closes what the pub/sub layer drops around the failover). Then the
old master is a replica, and a re-run of site.yml changes nothing and leaves the master where Sentinel put it.

Figures printed per fault: seconds from the fault to the promotion and to the first acknowledged push after it."""

import subprocess
import time

import pytest
from helpers import WS_CLIENTS, playbook, summary, under_load

PROMOTION_LIMIT = 30  # seconds; the goal is under 10 with a 3 s down-after


@pytest.fixture(scope="module")
def secrets(apps):
    """The data nodes' and the sentinels' passwords and the master name, from an app host's env file."""
    env = apps[sorted(apps)[0]].check_output("cat /etc/devops/devops.env")
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value.strip().strip("'\"") for key, value in values.items()}


def cli(host, secrets, *args, sentinel=False):
    """redis-cli on `host` (the sentinel on 26379, else the data node), the password from the environment."""
    password = secrets["REDIS_SENTINEL_PASSWORD"] if sentinel else secrets["REDIS_PASSWORD"]
    port = 26379 if sentinel else 6379
    command = "REDISCLI_AUTH=%s redis-cli --no-auth-warning -p %s " + " ".join(["%s"] * len(args))
    return host.run(command, password, port, *args)


def master_of(redis_hosts, secrets):
    """The inventory name of the host the sentinels name as master (asked on every reachable sentinel)."""
    addresses = {name: host.check_output("hostname -I").split()[0] for name, host in redis_hosts.items()}
    for host in redis_hosts.values():
        answer = cli(
            host, secrets, "SENTINEL", "get-master-addr-by-name", secrets["REDIS_SENTINEL_MASTER"], sentinel=True
        )
        if answer.rc == 0 and answer.stdout.split():
            address = answer.stdout.split()[0]
            for name, own in addresses.items():
                if address in (own, name):
                    return name
    raise AssertionError("no sentinel names a master")


def role(host, secrets):
    return cli(host, secrets, "ROLE").stdout.split()[0]


def wait_until(predicate, limit, what):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {limit} s")


FAULTS = {
    # fault and recovery, run from the controller
    "stopped": (
        lambda name: subprocess.run(["docker", "exec", name, "systemctl", "stop", "redis-server"], check=True),
        lambda name: subprocess.run(["docker", "exec", name, "systemctl", "start", "redis-server"], check=True),
    ),
    "killed": (
        lambda name: subprocess.run(["docker", "exec", name, "pkill", "-KILL", "-x", "redis-server"], check=True),
        lambda name: subprocess.run(["docker", "exec", name, "systemctl", "start", "redis-server"], check=True),
    ),
    "partitioned": (
        lambda name: subprocess.run(["docker", "pause", name], check=True),
        lambda name: subprocess.run(["docker", "unpause", name], check=True),
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_master_is_replaced_and_no_acknowledged_push_is_lost(fault, redis_hosts, secrets, site, tmp_path):
    inject, recover = FAULTS[fault]
    old = master_of(redis_hosts, secrets)
    others = {name: host for name, host in redis_hosts.items() if name != old}
    times = {}

    def fail_the_master():
        times["fault"] = time.time()
        inject(old)
        try:
            times["promoted"] = wait_until(
                lambda: master_of(others, secrets) != old, PROMOTION_LIMIT, f"a new master after {old} {fault}"
            )
            time.sleep(8)  # pushes flow on the new master
        finally:
            recover(old)
        return time.time() - times["fault"]

    seconds, report = under_load(site, tmp_path, f"master {fault}", fail_the_master)
    new = master_of(others, secrets)
    after = [
        done - times["fault"]
        for sent, done, outcome in report["push"]["timeline"]
        if outcome == "202" and sent >= times["fault"]
    ]
    failed = sum(1 for sent, _, outcome in report["push"]["timeline"] if outcome != "202")
    print(
        summary(
            f"{old} {fault}, {new} promoted after {times['promoted']:.1f} s, first acknowledged push "
            f"{min(after):.1f} s after the fault, {failed} pushes refused meanwhile",
            seconds,
            report,
        )
    )
    ws = report["ws"]
    assert new != old
    assert after, "no push was acknowledged after the fault"
    assert ws["clients_complete"] == ws["clients"] == WS_CLIENTS, ws["worst_clients"]
    assert ws["missing_total"] == ws["duplicates_total"] == ws["out_of_order_total"] == 0
    # The old master comes back as a replica of the new one.
    wait_until(lambda: role(redis_hosts[old], secrets) == "slave", 60, f"{old} back as a replica")


def test_site_yml_after_the_failovers_changes_nothing_and_keeps_the_master(redis_hosts, secrets):
    master = master_of(redis_hosts, secrets)
    _, result = playbook("site.yml")
    recap = [line for line in result.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), "\n".join(recap)
    assert master_of(redis_hosts, secrets) == master
    assert role(redis_hosts[master], secrets) == "master"
    assert sorted(role(host, secrets) for host in redis_hosts.values()) == ["master", "slave", "slave"]
