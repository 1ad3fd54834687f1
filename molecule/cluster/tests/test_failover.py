"""Redis failover under load: the master's redis-server stopped, killed with SIGKILL, and its container paused (a
partition). Each time Sentinel promotes a replica, pushes flow again, and no acknowledged push is lost: every client
ends with every one of them (the resume protocol closes what the pub/sub layer drops around the failover). Then the
old master is a replica, and a re-run of site.yml changes nothing and leaves the master where Sentinel put it.

Figures printed per fault: seconds from the fault to the promotion and to the first acknowledged push after it."""

import shlex
import subprocess
import time

import pytest
from helpers import WS_CLIENTS, playbook, summary, under_load

PROMOTION_LIMIT = 30  # seconds; the goal is under 10 with a 3 s down-after


@pytest.fixture(scope="module")
def secrets(apps, redis_hosts):
    """The sentinels' password and the master name from an app host's env file, and the data nodes' administration
    password (their default user's: ROLE is not the app's to run) from a Redis host's config."""
    env = apps[sorted(apps)[0]].check_output("cat /etc/devops/devops.env")
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    config = redis_hosts[sorted(redis_hosts)[0]].file("/etc/redis/redis.conf").content_string
    admin = next(shlex.split(line)[1] for line in config.splitlines() if line.startswith("requirepass "))
    return {**{key: value.strip().strip("'\"") for key, value in values.items()}, "REDIS_ADMIN_PASSWORD": admin}


def cli(name, secrets, *args, sentinel=False):
    """redis-cli in container `name` (the sentinel on 26379, else the data node): its answer, '' when it has none
    (docker exec straight from the controller: the promotion is timed by polling this)."""
    password = secrets["REDIS_SENTINEL_PASSWORD"] if sentinel else secrets["REDIS_ADMIN_PASSWORD"]
    port = "26379" if sentinel else "6379"
    command = ["docker", "exec", "-e", f"REDISCLI_AUTH={password}", name, "redis-cli", "--no-auth-warning", "-p", port]
    answer = subprocess.run([*command, *args], capture_output=True, text=True, timeout=10)
    return answer.stdout if answer.returncode == 0 else ""


@pytest.fixture(scope="module")
def addresses(redis_hosts):
    """{private address: inventory name} of the Redis hosts."""
    return {host.check_output("hostname -I").split()[0]: name for name, host in redis_hosts.items()}


def master_of(addresses, secrets, ask=None):
    """The inventory name of the host the sentinels name as master, asked on the sentinels of `ask` (default: every
    Redis host) until one answers; None when none does."""
    for name in ask or addresses.values():
        answer = cli(
            name, secrets, "SENTINEL", "get-master-addr-by-name", secrets["REDIS_SENTINEL_MASTER"], sentinel=True
        )
        if answer.split():
            return addresses.get(answer.split()[0], answer.split()[0])
    return None


def role(name, secrets):
    return (cli(name, secrets, "ROLE").split() or ["unreachable"])[0]


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
def test_a_failed_master_is_replaced_and_no_acknowledged_push_is_lost(fault, addresses, secrets, site, tmp_path):
    inject, recover = FAULTS[fault]
    old = master_of(addresses, secrets)
    others = [name for name in addresses.values() if name != old]
    times = {}

    def fail_the_master():
        times["fault"] = time.time()
        inject(old)
        try:
            times["promoted"] = wait_until(
                lambda: master_of(addresses, secrets, ask=others) not in (None, old),
                PROMOTION_LIMIT,
                f"a new master after {old} {fault}",
            )
            time.sleep(8)  # pushes flow on the new master
        finally:
            recover(old)
        return time.time() - times["fault"]

    seconds, report = under_load(site, tmp_path, f"master {fault}", fail_the_master)
    new = master_of(addresses, secrets, ask=others)
    # The outage the pushers saw: from the first push after the fault that was not acknowledged to the first
    # acknowledged one after it.
    timeline = [
        (sent - times["fault"], done - times["fault"], outcome) for sent, done, outcome in report["push"]["timeline"]
    ]
    refused = [(sent, done) for sent, done, outcome in timeline if outcome != "202" and sent >= 0]
    first_refused = refused[0][0] if refused else None
    back = min(
        (done for sent, done, outcome in timeline if outcome == "202" and sent >= (first_refused or 0)), default=None
    )
    print(
        summary(
            f"{old} {fault}, {new} promoted {times['promoted']:.1f} s after the fault; "
            + (
                f"{len(refused)} pushes refused from {first_refused:.1f} s, first acknowledged push again "
                f"{back:.1f} s after the fault"
                if refused and back is not None
                else "no push refused"
            ),
            seconds,
            report,
        )
    )
    ws = report["ws"]
    assert new != old
    assert back is not None, "no push was acknowledged after the fault"
    assert ws["clients_complete"] == ws["clients"] == WS_CLIENTS, ws["worst_clients"]
    assert ws["missing_total"] == ws["duplicates_total"] == ws["out_of_order_total"] == 0
    # The old master comes back as a replica of the new one.
    wait_until(lambda: role(old, secrets) == "slave", 60, f"{old} back as a replica")


def test_site_yml_after_the_failovers_changes_nothing_and_keeps_the_master(addresses, secrets):
    master = master_of(addresses, secrets)
    _, result = playbook("site.yml")
    recap = [line for line in result.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), "\n".join(recap)
    assert master_of(addresses, secrets) == master
    assert role(master, secrets) == "master"
    assert sorted(role(name, secrets) for name in addresses.values()) == ["master", "slave", "slave"]
