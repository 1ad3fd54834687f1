"""The local cluster (`bin/toolkit cluster`): fan-out and HTTP through the balancer with one app host and with two,
side by side, with the CPU of every process of every container.

"One app host" is app2 drained in HAProxy (`haproxy-member devops-cluster-app2 drain`, once its sessions ended):
new sessions go to app1 only, app2 keeps running and passing its health checks. "Two app hosts" is app2 ready
again. The fan-out sweep is the one of fanout.py pointed at the balancer's address on the cluster's Docker network
(not through the port Docker publishes on 127.0.0.1); HTTP is wrk inside the balancer's container against its own
127.0.0.1:80, so every request goes HAProxy -> an app host's nginx -> uwsgi over the network the hosts share.
"""

import csv
import io
import json
import os
import re
import time
from pathlib import Path

from . import fanout, http
from .common import HOST, ROOT, log, sh
from .playbook import host_vars, playbook
from .target import container_ip, exists, mint_grant

INVENTORY = ROOT / "inventory" / "cluster.yml"
PREFIX = "devops-cluster-"
LB, APP1, APP2, REDIS = (PREFIX + name for name in ("lb", "app1", "app2", "redis"))
CONTAINERS = (LB, APP1, APP2, REDIS)
BACKEND = "app"  # the balancer's backend (roles/haproxy)
SETUPS = {"one app host": 1, "two app hosts": 2}
HARNESS = "wrk"  # a label that is the load generator, not the stack

# Programs by a part of their command line, first match wins; anything else in a container counts as "other".
PROGRAMS = (
    ("wrk", "wrk "),
    ("haproxy", "haproxy"),
    ("daphne", "/daphne "),
    ("uvicorn", "/uvicorn "),
    ("uwsgi", "/uwsgi "),
    ("nginx", "nginx: "),
    ("redis", "redis-server"),
)
ASGI = ("daphne", "uvicorn")
ORDER = ("haproxy", "nginx", *ASGI, "uwsgi", "redis", "other", "wrk")

# "show stat" on the balancer's admin socket (what haproxy-member reads too), printed as it comes.
SHOW_STAT = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
    "s.sendall(b'show stat\\n'); print(b''.join(iter(lambda: s.recv(65536), b'')).decode())"
)
PLAYBOOKS = ("cluster.yml", "site.yml", "smoke.yml")  # what `bin/toolkit cluster` runs, in its order
# The load comes from one address and one fan-out sender: the per-client limits (nginx's and the app's frame rate,
# as inventory/bench.yml turns them off for bench-stack) would refuse most of it.
LIMITS_OFF = {
    "nginx_api_rate": 0,
    "nginx_ws_handshake_rate": 0,
    "nginx_ws_connections_per_client": 0,
    "app_extra_env": {"DEPLOY_CLIENT_FRAMES_PER_SECOND": 0},
}


def short(container):
    return container.removeprefix(PREFIX)


def program(args):
    """The program a command line belongs to (PROGRAMS), or "other"."""
    for name, needle in PROGRAMS:
        if needle in args:
            return name
    return "other"


def labels(rows, container):
    """{host pid: "<container> <program>"} for a container's `docker top` rows; each ASGI process on its own
    ("app1 daphne 0" from its socket daphne-0.sock, else numbered in pid order), the rest summed per program."""
    pids, asgi = {}, {}
    for pid, args in sorted(rows):
        name = program(args)
        if name in ASGI:
            index = re.search(rf"{name}-(\d+)\.sock", args)
            asgi[name] = asgi.get(name, -1) + 1
            name = f"{name} {index[1] if index else asgi[name]}"
        pids[pid] = f"{short(container)} {name}"
    return pids


def processes(container, attempts=5):
    """(host pid, command line) of each process of the container, as target.processes, but `docker top` is tried
    again when it fails: it fails now and then when a unit of the container's systemd ends (its cgroup vanishes
    while runc reads the cgroups)."""
    for _ in range(attempts - 1):
        result = sh("docker", "top", container, "-eo", "pid,args", check=False)
        if result.returncode == 0:
            break
        time.sleep(0.5)
    else:
        result = sh("docker", "top", container, "-eo", "pid,args")
    return [
        (int(pid), args.strip())
        for pid, _, args in (line.strip().partition(" ") for line in result.stdout.splitlines()[1:])
    ]


def cluster_pids():
    pids = {}
    for container in CONTAINERS:
        pids.update(labels(processes(container), container))
    return pids


def sort_key(label):
    """Containers in CONTAINERS' order, then programs in ORDER's, ASGI processes by number."""
    container, _, name = label.partition(" ")
    names = [short(c) for c in CONTAINERS]
    base, _, number = name.partition(" ")
    return (
        names.index(container) if container in names else len(names),
        ORDER.index(base) if base in ORDER else len(ORDER),
        int(number) if number.isdigit() else 0,
        label,
    )


def parse_stat(text, backend=BACKEND):
    """The backend's servers from "show stat" CSV: {server: {status, sessions now, sessions total, 2xx}}."""
    servers = {}
    for row in csv.DictReader(io.StringIO(text.lstrip("# "))):
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND", None):
            servers[row["svname"]] = {
                "status": row["status"],
                "sessions": int(row["scur"] or 0),
                "total": int(row["stot"] or 0),
                "2xx": int(row.get("hrsp_2xx") or 0),
            }
    return servers


def stat():
    return parse_stat(sh("docker", "exec", LB, "python3", "-c", SHOW_STAT).stdout)


def served(before, after, key):
    """What each server took between two `stat()` readings ("total": sessions, "2xx": answers)."""
    return {short(s): after[s][key] - before.get(s, {}).get(key, 0) for s in after}


def member(server, action, wait=30):
    """haproxy-member on the balancer; its JSON answer."""
    answer = sh("docker", "exec", LB, "haproxy-member", server, action, "--wait", str(wait)).stdout
    return json.loads(answer.strip().splitlines()[-1])


def app_hosts(count):
    """Two: app2 ready (UP); one: app2 drained, once its sessions ended."""
    if count == 2:
        answer = member(APP2, "ready")
        if not answer["up"]:
            raise SystemExit(f"{APP2} is not UP in the balancer: {answer}")
    else:
        answer = member(APP2, "drain")
        if not answer["idle"]:
            raise SystemExit(f"{APP2} still has sessions after 30 s of drain: {answer}")


def is_up():
    """The balancer answers and both app hosts are in its backend, UP or drained (a run stopped half-way)."""
    if not all(exists(c) for c in CONTAINERS):
        return False
    try:
        servers = stat()
    except SystemExit:
        return False
    return all(servers.get(s, {}).get("status", "").startswith(("UP", "DRAIN")) for s in (APP1, APP2))


def bring_up():
    """The playbooks of `bin/toolkit cluster`, unless the cluster is up already (then it is measured as it is)."""
    if is_up():
        log("cluster: up already (devops-cluster-*), measured as it is deployed (its per-client limits too)")
        return None
    started = time.monotonic()
    for name in PLAYBOOKS:
        log(f"cluster: ansible-playbook -i inventory/cluster.yml playbooks/{name}")
        seconds, returncode, recap, stderr = playbook(
            ROOT / "playbooks" / name,
            log_name=f"cluster-{name.removesuffix('.yml')}",
            inventory=INVENTORY,
            extra=LIMITS_OFF,
        )
        if returncode != 0:
            failures = "\n".join(recap.failures()) if recap else ""
            raise SystemExit(
                f"playbooks/{name} failed (exit {returncode}; .cache/bench/cluster-*.json):\n{failures}\n"
                f"{stderr[-3000:]}"
            )
        log(f"cluster: {name} done in {seconds:.0f} s")
    return round(time.monotonic() - started)


def uwsgi_workers(container):
    """processes x threads of the deployed uwsgi, from the ini its command line names."""
    ini_path = next(re.search(r"--ini (\S+)", a)[1] for _, a in processes(container) if program(a) == "uwsgi")
    ini = sh("docker", "exec", container, "cat", ini_path).stdout
    return int(re.search(r"^processes = (\d+)", ini, re.M)[1]), int(re.search(r"^threads = (\d+)", ini, re.M)[1])


def at_capacity(result):
    """The highest passing step of a sweep (None when none passed)."""
    passed = [s for s in result["steps"] if s["ok"]]
    return passed[-1] if passed else None


def machine_busy(text=None):
    """CPU seconds the whole machine has been busy so far (every CPU; processes and the kernel's interrupt work,
    not steal), from the first line of /proc/stat."""
    fields = [int(v) for v in (text or Path("/proc/stat").read_text()).splitlines()[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def with_machine_cpu(measure):
    """fanout.measure, and how busy the whole machine was during the step (cores) in the row."""

    def step(gen, rate, args, server_pids):
        busy, started = machine_busy(), time.time()
        row = measure(gen, rate, args, server_pids)
        row["machine_cpu"] = round((machine_busy() - busy) / (time.time() - started), 2)
        return row

    return step


def fan_out(args, count, grant):
    app_hosts(count)
    pids, before = cluster_pids(), stat()
    # fanout.sweep as it is, its steps measured with the machine's CPU as well.
    measure, fanout.measure = fanout.measure, with_machine_cpu(fanout.measure)
    try:
        result = fanout.sweep((container_ip(LB), 80), args, pids, grant)
    finally:
        fanout.measure = measure
    result["websockets"] = served(before, stat(), "total")  # receivers and the sender, per app host
    return result


def wrk_round(connections, seconds, pids):
    """One wrk run inside the balancer; its figures, the CPU of each process and the answers per app host."""
    before, cpu_before = stat(), fanout.cpu_seconds(pids)
    busy, started = machine_busy(), time.time()
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {HOST}"]
    out = sh("docker", "exec", LB, "python3", "-c", http.WRK, *argv, "http://127.0.0.1:80/healthz").stdout
    machine = (machine_busy() - busy) / (time.time() - started)  # over docker exec's whole run
    cpu_after, after = fanout.cpu_seconds(pids), stat()
    row = http.parse_wrk(out, seconds)
    row["machine_cpu"] = round(machine, 3)
    row["cpu"] = {k: round((cpu_after.get(k, 0) - v) / seconds, 3) for k, v in cpu_before.items()}
    requests = row["rps"] * seconds
    row["server_us_per_request"] = sum(cpu_after.get(k, 0) - v for k, v in cpu_before.items()) / requests * 1e6
    row["answers"] = served(before, after, "2xx")
    return row


def median_row(samples):
    """Median of each figure over the rounds (of each process' CPU too, and of each host's answers)."""
    row = {}
    for key, value in samples[0].items():
        if isinstance(value, dict):
            row[key] = {k: sorted(s[key].get(k, 0) for s in samples)[len(samples) // 2] for k in value}
        else:
            row[key] = sorted(s[key] for s in samples)[len(samples) // 2]
    row["rounds"] = [round(s["rps"]) for s in samples]
    return row


def http_rounds(args, connections):
    """Alternating rounds, one host then two: a burst of other load hits both alike."""
    sh("docker", "exec", LB, "sh", "-c", http.WRK_INSTALL)
    runs = {name: [] for name in SETUPS}
    for count in SETUPS.values():  # warm-up
        app_hosts(count)
        wrk_round(connections, 2, cluster_pids())
    for _ in range(args.http_rounds):
        for name, count in SETUPS.items():
            app_hosts(count)
            runs[name].append(wrk_round(connections, args.http_seconds, cluster_pids()))
    rows = {}
    for name, samples in runs.items():
        rows[name] = median_row(samples)
        log(
            f"cluster http, {name}: {rows[name]['rps']:.0f} req/s (rounds {rows[name]['rounds']}), "
            f"p99 {rows[name]['p99_ms']:.1f} ms, answers {rows[name]['answers']}, "
            f"{rows[name]['server_us_per_request']:.0f} µs CPU per request"
        )
    return rows


def run(args):
    converge_s = bring_up()
    pids = cluster_pids()
    asgi = sorted({label.split()[1] for label in pids.values() if label.split()[1] in ASGI})
    workers = {short(c): uwsgi_workers(c) for c in (APP1, APP2)}
    # The same offered concurrency for both setups: as many connections as both hosts have uwsgi threads.
    connections = args.http_connections or sum(p * t for p, t in workers.values())
    result = {
        "clients": args.clients,
        "workers": args.workers,
        "p99_limit_ms": args.p99_limit,
        "cpus": os.cpu_count(),
        "converge_s": converge_s,
        "asgi": asgi,
        "asgi_processes": sum(1 for label in pids.values() if label.startswith("app1 ") and label.split()[1] in ASGI),
        "uwsgi": {host: f"{p} x {t}" for host, (p, t) in workers.items()},
        "http_connections": connections,
        "http_seconds": args.http_seconds,
        "fanout": {},
        "http": {},
    }
    # The app hosts share the secret key: a grant from app1 opens the websockets of both.
    grant = mint_grant(APP1, host_vars(APP1, "app_user", inventory=INVENTORY))
    try:
        for name, count in SETUPS.items():
            log(f"cluster fanout: {name} through the balancer")
            result["fanout"][name] = fan_out(args, count, grant)
        result["http"] = http_rounds(args, connections)
    finally:
        app_hosts(2)  # app2 back in the balancer whatever happened
    return result
