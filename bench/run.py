"""Run the benchmarks and write bench/results/: one JSON file per benchmark, results.md and fanout.png.

    python bench/run.py [provision|http|push|fanout|image ...] [--configs a,b] [--clients C]

Every figure stands beside the floor it is held against, measured in the same run: converge against
installing the same packages by hand, nginx->uwsgi against uwsgi alone, the deployed websocket stack
against a bare `websockets` broadcaster, push latency against the cost of the transport alone. The
machine is shared and noisy, so read the ratios, not the absolute numbers.

Targets are containers named bench-* only; load goes to 127.0.0.1 and to those containers only.
"""

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import wsload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / ".cache" / "bench"  # run logs (git-ignored): the last converge, the bare broadcaster, an image failure
INVENTORY = ROOT / "inventory" / "bench.yml"
STACK = "bench-stack"
FLOOR = "bench-floor"
IMAGE = "devops-channels/debian:bookworm"
BARE_PORT = 18765
HOST = "localhost"  # Host and Origin header: what app_allowed_hosts accepts

# Stack configurations (extra vars of site.yml). "baseline" pins the defaults as they were before the
# tuning, so every run measures before and after side by side; "default" is the roles' defaults now.
CONFIGS = {
    "default": {},
    "baseline": {
        "app_channel_layer": "redis",
        "devops_asgi_server": "daphne",
        "daphne_processes": 2,
        "uwsgi_processes": 2,
        "uwsgi_threads": 2,
        "uwsgi_max_requests": 5000,
        "uwsgi_max_requests_delta": 500,
    },
    "daphne-core": {"devops_asgi_server": "daphne", "app_channel_layer": "redis"},
    "daphne-pubsub": {"devops_asgi_server": "daphne", "app_channel_layer": "redis-pubsub"},
    "daphne-pubsub-1proc": {
        "devops_asgi_server": "daphne",
        "app_channel_layer": "redis-pubsub",
        "daphne_processes": 1,
    },
    "daphne-pubsub-4proc": {
        "devops_asgi_server": "daphne",
        "app_channel_layer": "redis-pubsub",
        "daphne_processes": 4,
    },
    "uvicorn-core": {"devops_asgi_server": "uvicorn", "app_channel_layer": "redis"},
    "uvicorn-pubsub": {"devops_asgi_server": "uvicorn", "app_channel_layer": "redis-pubsub"},
}
FANOUT_CONFIGS = ["default", "baseline", "uvicorn-pubsub"]
HTTP_CONFIGS = ["default", "baseline"]
# The apt packages site.yml installs on a modern host (roles redis, supervisor, app, nginx).
APT_PACKAGES = ["redis-server", "supervisor", "nginx", "python3", "python3-venv", "ca-certificates"]


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def sh(*argv, check=True, capture=True, **kw):
    result = subprocess.run(argv, check=False, capture_output=capture, text=True, **kw)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])}...: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def timed(*argv, **kw):
    started = time.monotonic()
    result = sh(*argv, **kw)
    return time.monotonic() - started, result


# --- containers -------------------------------------------------------------------------------------------


# The flags molecule/default gives its systemd containers (docs: /work/shared/docs/environment.md).
SYSTEMD_FLAGS = (
    "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns=host "
    "-v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3"
).split()


def start_container(name, port=None):
    """A fresh systemd container from the base image, created the way molecule/default creates its own."""
    sh("docker", "rm", "-f", name, check=False)
    published = ["-p", f"127.0.0.1:{port}:80"] if port else []
    labels = ["--label", "org.devops-channels.role=bench"]
    sh("docker", "run", "-d", "--name", name, "--hostname", name, *SYSTEMD_FLAGS, *published, *labels, IMAGE,
       "/lib/systemd/systemd")  # fmt: skip
    # Wait for the end of the boot: systemd-tmpfiles empties /tmp early in it (apt's signature check uses /tmp).
    for _ in range(60):
        state = sh("docker", "exec", name, "systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(1)
    sys.exit(f"{name}: systemd did not finish booting ({state})")


def container_ip(name):
    return sh(
        "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).stdout.strip()


def converge(extra=None):
    """site.yml on bench-stack; returns (seconds, changed count)."""
    argv = ["ansible-playbook", "-i", str(INVENTORY), str(ROOT / "playbooks" / "site.yml")]
    if extra:
        argv += ["-e", json.dumps(extra)]
    seconds, result = timed(*argv, cwd=ROOT)
    (LOGS / "converge.log").write_text(result.stdout)  # the last one, to see what a re-run changed
    changed = re.search(r"bench-stack\s*:.*changed=(\d+)", result.stdout)
    return seconds, int(changed[1]) if changed else None


def changed_tasks():
    """Names of the tasks the last converge reported as changed."""
    task, names = "", []
    for line in (LOGS / "converge.log").read_text().splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            names.append(task)
    return names


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = {}
    for pid, label in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total[label] = total.get(label, 0) + (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError):
            pass
    return total


def stack_pids():
    """Host pids of the stack's processes, labelled by program."""
    out = sh("docker", "top", STACK, "-eo", "pid,args").stdout.splitlines()[1:]
    pids = {}
    for line in out:
        pid, _, args = line.strip().partition(" ")
        for label, needle in (
            ("daphne", "/daphne "),
            ("uvicorn", "/uvicorn "),
            ("redis", "redis-server"),
            ("nginx", "nginx: worker"),
            ("uwsgi", "/uwsgi "),
        ):
            if needle in args:
                pids[int(pid)] = label
    return pids


# --- provisioning -----------------------------------------------------------------------------------------


def bench_provision(args):
    log("provision: fresh bench-stack, converge site.yml")
    start_container(STACK, args.port)
    first, changed_first = converge()
    log(f"provision: converge {first:.0f} s ({changed_first} changed); idempotent re-run")
    again, changed_again = converge()
    rerun_changed_tasks = changed_tasks()
    log(f"provision: re-run {again:.0f} s ({changed_again} changed); floor: the same packages by hand")
    start_container(FLOOR)
    sh("docker", "cp", str(ROOT / "app" / "requirements" / "modern.txt"), f"{FLOOR}:/root/modern.txt")
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; "
        f"apt-get install -y -q {' '.join(APT_PACKAGES)} >/dev/null; python3 -m venv /root/venv; "
        "PIP_CONFIG_FILE=/dev/null PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 "
        "/root/venv/bin/pip install -q --require-hashes -r /root/modern.txt"
    )
    try:
        floor, _ = timed("docker", "exec", FLOOR, "sh", "-c", script)
    finally:
        sh("docker", "rm", "-f", FLOOR)
    log(f"provision: floor {floor:.0f} s")
    return {
        "converge_s": first,
        "converge_changed": changed_first,
        "rerun_s": again,
        "rerun_changed": changed_again,
        "rerun_changed_tasks": rerun_changed_tasks,
        "floor_s": floor,
        "floor_what": f"apt-get install {' '.join(APT_PACKAGES)}; venv; pip install modern.txt",
    }


def bench_image(args):
    """playbooks/image.yml (another engineer's work) under bench-* names, so it touches nobody's container or tag."""
    playbook = ROOT / "playbooks" / "image.yml"
    if not playbook.exists():
        return {"measured": False, "reason": "playbooks/image.yml does not exist"}
    log("image: playbooks/image.yml (build container bench-image, repository devops-channels/bench-image)")
    names = {"image_build_container": "bench-image", "image_repository": "devops-channels/bench-image"}
    try:
        seconds, result = timed("ansible-playbook", str(playbook), "-e", json.dumps(names), cwd=ROOT, check=False)
    finally:
        sh("docker", "rm", "-f", "bench-image", check=False)
    if result.returncode != 0:
        (LOGS / "image.log").write_text(result.stdout + result.stderr)
        return {
            "measured": False,
            "reason": f"playbooks/image.yml failed (exit {result.returncode}, see .cache/bench/image.log)",
        }
    tags = sh("docker", "images", "devops-channels/bench-image", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    size = sh("docker", "image", "inspect", "-f", "{{.Size}}", tags[0], check=False).stdout.strip() if tags else ""
    log(f"image: {seconds:.0f} s, {tags[:1]}, {size} bytes")
    for tag in tags:
        sh("docker", "rmi", tag, check=False)
    return {
        "measured": True,
        "build_s": seconds,
        "image": tags[0] if tags else None,
        "size_mb": round(int(size) / 1e6) if size.isdigit() else None,
    }


# --- HTTP -------------------------------------------------------------------------------------------------


# wrk runs inside bench-stack (installed there from Debian) against 127.0.0.1: uwsgi's http-socket answers
# without keep-alive, and a new TCP connection per request from the host would run out of ephemeral ports
# (TIME_WAIT); on loopback the kernel reuses them. The CPU wrk used is measured by a python3 wrapper there.
WRK = (
    "import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(out); print('CPU', usage.ru_utime + usage.ru_stime)"
)


def wrk(url, seconds, connections):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {HOST}", url]
    out = sh("docker", "exec", STACK, "python3", "-c", WRK, *argv).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out)[1])
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_ms = float(p99[1]) * {"us": 0.001, "ms": 1, "s": 1000}[p99[2]]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    cpu = float(re.search(r"^CPU ([\d.]+)", out, re.M)[1]) / seconds
    return {
        "rps": rps,
        "p99_ms": p99_ms,
        "errors": (int(non2xx[1]) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0),
        "wrk_cpu": cpu,
    }


DIRECT_UWSGI = (
    # The deployed ini with its unix socket swapped for a keep-alive http11-socket on loopback; stats socket and
    # chain-reload trigger dropped so the live instance is untouched.
    "sed -e 's|^socket = .*|http11-socket = 127.0.0.1:8001|' -e '/^stats = /d' -e '/^touch-chain-reload/d' "
    "-e '/^chmod-socket/d' -e '/^vacuum/d' /etc/devops/uwsgi.ini > /tmp/bench-uwsgi.ini; "
    "echo $$ > /tmp/bench-uwsgi.pid; "
    "exec setpriv --reuid=devops --regid=devops --init-groups /srv/devops/bin/run "
    "/srv/devops/current/venv/bin/uwsgi --ini /tmp/bench-uwsgi.ini >/tmp/bench-uwsgi.log 2>&1"
)
WRK_INSTALL = "command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null"
READY = (
    "for i in $(seq 60); do python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:8001/healthz\")' "
    "2>/dev/null && exit 0; sleep 0.5; done; exit 1"
)


def bench_http(args, config):
    """wrk with as many connections as uwsgi has worker threads (processes x threads): the direct path keeps
    each connection alive (http11-socket) and a kept-alive connection holds one thread."""
    ini = sh("docker", "exec", STACK, "cat", "/etc/devops/uwsgi.ini").stdout
    workers = int(re.search(r"^processes = (\d+)", ini, re.M)[1]) * int(re.search(r"^threads = (\d+)", ini, re.M)[1])
    connections = args.http_connections or workers
    sh("docker", "exec", STACK, "sh", "-c", WRK_INSTALL)
    sh("docker", "exec", "-d", STACK, "sh", "-c", DIRECT_UWSGI)
    try:
        sh("docker", "exec", STACK, "sh", "-c", READY)
        paths = {"direct uwsgi": "http://127.0.0.1:8001/healthz", "nginx -> uwsgi": "http://127.0.0.1:80/healthz"}
        for url in paths.values():
            wrk(url, 2, connections)  # warm-up
        # Alternating short rounds, median of each: a neighbour's burst hits both paths alike.
        runs = {name: [] for name in paths}
        for _ in range(args.http_rounds):
            for name, url in paths.items():
                runs[name].append(wrk(url, args.http_seconds, connections))
        rows = {}
        for name, samples in runs.items():
            rows[name] = {key: sorted(s[key] for s in samples)[len(samples) // 2] for key in samples[0]}
            rows[name]["rounds"] = [round(s["rps"]) for s in samples]
            rows[name]["connections"] = connections
            log(
                f"http {config}: {name}: {rows[name]['rps']:.0f} req/s (rounds {rows[name]['rounds']}), "
                f"p99 {rows[name]['p99_ms']:.1f} ms"
            )
        return rows
    finally:
        sh("docker", "exec", STACK, "sh", "-c", "kill -TERM $(cat /tmp/bench-uwsgi.pid)", check=False)


# --- push latency -----------------------------------------------------------------------------------------


async def push_latency(args):
    ip = container_ip(STACK)
    token = (ROOT / ".secrets" / "bench" / "app_push_token").read_text().strip()
    stats = wsload.Stats()
    stats.reset(1)
    (client,) = await wsload.connect_all((ip, 80), HOST, "/ws/deploy/bench-push/", 1, stats)

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
            await asyncio.to_thread(sh, "docker", "exec", STACK, "devops-manage", "push", "bench-push", message)
        elif kind == "HTTP push":
            body = json.dumps({"message": message}).encode()
            await asyncio.to_thread(http, "POST", "/api/push/bench-push/", body, token)
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
    for kind in ("manage.py push", "floor: docker exec true", "HTTP push", "floor: GET /healthz via nginx"):
        samples = [await run(kind, i) for i in range(args.pushes)]
        got = sorted(s * 1000 for s in samples if s is not None)
        rows[kind] = {
            "n": args.pushes,
            "received": len(got),
            "p50_ms": got[len(got) // 2] if got else None,
            "max_ms": got[-1] if got else None,
            "min_ms": got[0] if got else None,
        }
        log(f"push: {kind}: {rows[kind]}")
    client.close()
    return rows


# --- fan-out ----------------------------------------------------------------------------------------------


def measure(gen, rate, args, server_pids):
    before, started = cpu_seconds(server_pids), time.time()
    row = gen.step(rate, args.step_seconds)
    elapsed, after = time.time() - started, cpu_seconds(server_pids)
    row.update(wsload.percentiles(row.pop("hist")))
    row["delivered_pct"] = 100.0 * row["received"] / row["expected"]
    row["delivered_per_s"] = row["received"] / row["send_seconds"]
    row["server_cpu"] = {k: round((after.get(k, 0) - v) / elapsed, 2) for k, v in before.items()}
    # CPU time the server side spent per delivery: robust to a noisy neighbour, unlike latency.
    row["server_us_per_delivery"] = sum(after.get(k, 0) - v for k, v in before.items()) / row["received"] * 1e6
    row["ok"] = row["received"] == row["expected"] and row["p99"] is not None and row["p99"] < args.p99_limit
    log(
        f"  {row['offered_per_s']:>8.0f}/s offered: {row['delivered_pct']:6.2f} % delivered, "
        f"p50 {row['p50'] or 0:7.1f} p99 {row['p99'] or 0:7.1f} max {row['max'] or 0:7.1f} ms; "
        f"cpu server {row['server_cpu']} sender {row['sender_cpu']:.2f} "
        f"receivers {[round(c, 2) for c in row['receiver_cpu']]}"
    )
    return row


def sweep(address, args, server_pids):
    """Offered load up by `factor` until a step fails, then two bisections between the last pass and it."""
    gen = wsload.Generator(address, args.clients, workers=args.workers, host=HOST)
    try:
        rows, good, bad = [], None, None
        rate = args.start / args.clients
        while bad is None and len(rows) < args.max_steps:
            row = measure(gen, rate, args, server_pids)
            rows.append(row)
            if not row["ok"]:  # one retry: a neighbour's burst on this shared machine can fail a single step
                gen.quiet()
                row = measure(gen, rate, args, server_pids)
                rows.append(row)
            if row["ok"]:
                good, rate = rate, rate * args.factor
            else:
                bad = rate
        for _ in range(2 if good and bad else 0):
            gen.quiet()
            rate = math.sqrt(good * bad)
            row = measure(gen, rate, args, server_pids)
            rows.append(row)
            good, bad = (rate, bad) if row["ok"] else (good, rate)
    finally:
        gen.close()
    steps = sorted(rows, key=lambda r: r["rate"])
    return {"capacity_per_s": good * args.clients if good else 0, "server_us_per_delivery": cost(steps), "steps": steps}


def cost(steps):
    """Server CPU per delivery near capacity: the median of the three most loaded passing steps (at light load
    the idle work of each process would count against too few deliveries)."""
    costs = [s["server_us_per_delivery"] for s in steps if s["ok"]][-3:]
    return sorted(costs)[len(costs) // 2] if costs else None


def bench_bare(args):
    log("fanout: bare websockets broadcaster on 127.0.0.1")
    with open(LOGS / "bare.log", "w") as bare_log:
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py"), str(BARE_PORT)], stderr=bare_log)
        try:
            time.sleep(1)
            return sweep(("127.0.0.1", BARE_PORT), args, {bare.pid: "bare"})
        finally:
            bare.terminate()
            bare.wait(10)


def bench_fanout(args, config):
    log(f"fanout: {config} {CONFIGS[config]}")
    result = sweep((container_ip(STACK), 80), args, stack_pids())
    result["vars"] = CONFIGS[config]
    return result


# --- report -----------------------------------------------------------------------------------------------


def ms(value):
    return "n/a" if value is None else f"{value:.1f}"


def ratio(a, b):
    return f"{a / b:.3g}" if a and b else "n/a"


def report():
    data = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bin/toolkit bench` ({time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"{os.cpu_count()} CPUs, shared machine: compare the ratios, not the absolute figures).",
        "",
    ]
    if "fanout" in data:
        fan = data["fanout"]
        bare = fan["configs"].get("bare", {}).get("capacity_per_s")
        lines += [
            "## Websocket fan-out",
            "",
            f"{fan['clients']} clients on one service group, one sender; capacity = highest offered "
            f"deliveries/s with 100 % delivered and p99 < {fan['p99_limit_ms']} ms. Generator: "
            f"{fan['workers']} receiver processes + 1 sender process.",
            "",
            "| configuration | capacity deliveries/s | ÷ bare | server CPU µs per delivery | "
            "bare's CPU ÷ this | vars |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        bare_cost = cost(fan["configs"]["bare"]["steps"]) if "bare" in fan["configs"] else None
        for name, cfg in fan["configs"].items():
            cfg_cost = cost(cfg["steps"])
            lines.append(
                f"| {name} | {cfg['capacity_per_s']:.0f} | {ratio(cfg['capacity_per_s'], bare)} | "
                f"{cfg_cost or 0:.1f} | {ratio(bare_cost, cfg_cost)} | `{json.dumps(cfg.get('vars', {}))}` |"
            )
        lines += [
            "",
            "![latency against offered load](fanout.png)",
            "",
            "<details><summary>every step</summary>",
            "",
            "| configuration | offered/s | delivered/s | % delivered | p50 ms | p99 ms | max ms | "
            "server CPU (cores) | sender CPU | receiver CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        ]
        for name, cfg in fan["configs"].items():
            for s in cfg["steps"]:
                lines.append(
                    f"| {name} | {s['offered_per_s']:.0f} | {s['delivered_per_s']:.0f} | {s['delivered_pct']:.2f} | "
                    f"{s['p50'] or 0:.1f} | {s['p99'] or 0:.1f} | {s['max'] or 0:.1f} | "
                    f"{' '.join(f'{k} {v}' for k, v in s['server_cpu'].items())} | {s['sender_cpu']:.2f} | "
                    f"{' '.join(f'{c:.2f}' for c in s['receiver_cpu'])} |"
                )
        lines += ["", "</details>", ""]
    if "http" in data:
        lines += [
            "## HTTP: nginx -> uwsgi against uwsgi alone (`GET /healthz`, wrk inside the container, connections = "
            "uwsgi processes x threads)",
            "",
            "| configuration | path | connections | requests/s | p99 ms | errors | wrk CPU | ÷ direct (req/s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for config, rows in data["http"].items():
            direct = rows["direct uwsgi"]["rps"]
            for path, r in rows.items():
                lines.append(
                    f"| {config} | {path} | {r.get('connections', '')} | {r['rps']:.0f} | {r['p99_ms']:.1f} | "
                    f"{r['errors']} | {r['wrk_cpu']:.2f} | {ratio(r['rps'], direct)} |"
                )
        lines.append("")
    if "push" in data:
        lines += [
            "## Push latency to a connected websocket client (through nginx)",
            "",
            "| path | n | received | min ms | p50 ms | max ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind, r in data["push"].items():
            lines.append(
                f"| {kind} | {r['n']} | {r['received']} | {ms(r['min_ms'])} | {ms(r['p50_ms'])} | {ms(r['max_ms'])} |"
            )
        lines.append("")
    if "provision" in data:
        p = data["provision"]
        lines += [
            "## Provisioning",
            "",
            "| what | seconds | changed | ÷ floor |",
            "| --- | ---: | ---: | ---: |",
            f"| site.yml converge, fresh container | {p['converge_s']:.0f} | {p['converge_changed']} | "
            f"{ratio(p['converge_s'], p['floor_s'])} |",
            f"| site.yml re-run (idempotent) | {p['rerun_s']:.0f} | {p['rerun_changed']} | "
            f"{ratio(p['rerun_s'], p['floor_s'])} |",
            f"| floor: {p['floor_what']} | {p['floor_s']:.0f} | | 1.00 |",
            "",
        ]
        if p.get("rerun_changed_tasks"):
            lines += [f"The re-run changed: {', '.join(p['rerun_changed_tasks'])}.", ""]
    if "image" in data:
        i = data["image"]
        lines += [
            "## Image build (playbooks/image.yml)",
            "",
            (
                f"{i['build_s']:.0f} s, image {i['image']}, {i['size_mb']} MB"
                if i["measured"]
                else f"Not measured: {i['reason']}."
            ),
            "",
        ]
    (RESULTS / "results.md").write_text("\n".join(lines))
    if "fanout" in data:
        sh(sys.executable, str(ROOT / "bench" / "plot.py"), str(RESULTS / "fanout.json"), str(RESULTS / "fanout.png"))
    log(f"wrote {RESULTS / 'results.md'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[], help="provision http push fanout image (default: all)")
    parser.add_argument(
        "--configs", default=",".join(FANOUT_CONFIGS), help=f"fan-out configurations of {list(CONFIGS)}"
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="receiver processes of the generator")
    parser.add_argument("--start", type=float, default=1000, help="first offered deliveries/s")
    parser.add_argument("--factor", type=float, default=1.6)
    parser.add_argument("--max-steps", type=int, default=14)
    parser.add_argument("--step-seconds", type=float, default=3)
    parser.add_argument("--p99-limit", type=float, default=250)
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--http-seconds", type=int, default=4)
    parser.add_argument("--http-rounds", type=int, default=3)
    parser.add_argument("--http-connections", type=int, default=0, help="0: uwsgi's processes x threads")
    parser.add_argument("--port", type=int, default=18080, help="127.0.0.1 port published to bench-stack's 80")
    args = parser.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    names = args.names or ["provision", "http", "push", "fanout", "image"]
    unknown = set(names) - {"provision", "http", "push", "fanout", "image", "report"}
    if unknown or set(args.configs) - set(CONFIGS):
        parser.error(f"unknown benchmark or configuration: {unknown or set(args.configs) - set(CONFIGS)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if "provision" in names:
        (RESULTS / "provision.json").write_text(json.dumps(bench_provision(args), indent=1))
    # One converge per stack configuration; every benchmark that needs that configuration runs on it.
    stack_benches = {"http", "push", "fanout"} & set(names)
    configs = ["default"] * ("push" in names) + HTTP_CONFIGS * ("http" in names) + args.configs * ("fanout" in names)
    http, fanout = {}, {"clients": args.clients, "workers": args.workers, "p99_limit_ms": args.p99_limit, "configs": {}}
    if "fanout" in names:
        fanout["configs"]["bare"] = bench_bare(args)
    fresh = "provision" in names  # bench-stack was just converged with the defaults
    for config in dict.fromkeys(configs) if stack_benches else []:
        if sh("docker", "inspect", STACK, check=False).returncode != 0:
            start_container(STACK, args.port)
        if not (fresh and config == "default"):
            seconds, changed = converge(CONFIGS[config])
            log(f"{config}: converged in {seconds:.0f} s ({changed} changed) with {CONFIGS[config]}")
        fresh = False
        if "http" in names and config in HTTP_CONFIGS:
            http[config] = bench_http(args, config)
        if "push" in names and config == "default":
            (RESULTS / "push.json").write_text(json.dumps(asyncio.run(push_latency(args)), indent=1))
        if "fanout" in names and config in args.configs:
            fanout["configs"][config] = bench_fanout(args, config)
    if http:
        (RESULTS / "http.json").write_text(json.dumps(http, indent=1))
    if "fanout" in names:
        (RESULTS / "fanout.json").write_text(json.dumps(fanout, indent=1))
    if "image" in names:
        (RESULTS / "image.json").write_text(json.dumps(bench_image(args), indent=1))
    report()
    log(f"bench done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
