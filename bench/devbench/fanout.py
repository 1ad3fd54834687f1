"""Websocket fan-out: a sweep of offered load against the deployed stack and against bench/bare.py, a bare
`websockets` broadcaster on 127.0.0.1, with the server side's CPU per delivery."""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import wsload

from .common import HOST, LOGS, ROOT, STACK, log, sh
from .configs import CONFIGS
from .target import container_ip, mint_grant, stack_pids

BARE_PORT = 18765


def cpu_seconds(pids):
    """CPU seconds (user + system) used so far, summed per label, from /proc/<pid>/stat on this host."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = {}
    for pid, label in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total[label] = total.get(label, 0) + (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError):
            pass
    return total


def measure(gen, rate, args, server_pids):
    before, started = cpu_seconds(server_pids), time.time()
    row = gen.step(rate, args.step_seconds)
    elapsed, after = time.time() - started, cpu_seconds(server_pids)
    row.update(wsload.percentiles(row.pop("hist")))
    row["delivered_pct"] = 100.0 * row["received"] / row["expected"]
    row["delivered_per_s"] = row["received"] / row["send_seconds"]
    row["server_cpu"] = {k: round((after.get(k, 0) - v) / elapsed, 2) for k, v in before.items()}
    # CPU time the server side spent per delivery: robust to other load on the machine, unlike latency.
    row["server_us_per_delivery"] = sum(after.get(k, 0) - v for k, v in before.items()) / row["received"] * 1e6
    row["ok"] = row["received"] == row["expected"] and row["p99"] is not None and row["p99"] < args.p99_limit
    log(
        f"  {row['offered_per_s']:>8.0f}/s offered: {row['delivered_pct']:6.2f} % delivered, "
        f"p50 {row['p50'] or 0:7.1f} p99 {row['p99'] or 0:7.1f} max {row['max'] or 0:7.1f} ms; "
        f"cpu server {row['server_cpu']} sender {row['sender_cpu']:.2f} "
        f"receivers {[round(c, 2) for c in row['receiver_cpu']]}"
    )
    return row


def sweep(address, args, server_pids, grant=None):
    """Offered load up by `factor` until a step fails, then two bisections between the last pass and it. The clients
    offer `grant` (the app's websockets need one; the bare broadcaster none).

    A target that refuses or drops the clients fails the configuration: the result says why (`failed`) and keeps
    the steps measured before, and the run goes on with the next configuration."""
    rows, good, bad = [], None, None
    try:
        gen = wsload.Generator(address, args.clients, workers=args.workers, host=HOST, grant=grant)
    except wsload.TargetFailed as exc:
        log(f"  failed: {exc}")
        return {"capacity_per_s": 0, "server_us_per_delivery": None, "steps": [], "failed": str(exc)}
    failed = None
    try:
        rate = args.start / args.clients
        while bad is None and len(rows) < args.max_steps:
            row = measure(gen, rate, args, server_pids)
            rows.append(row)
            if not row["ok"]:  # one retry: a burst of other load on the machine can fail a single step
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
    except wsload.TargetFailed as exc:
        failed = str(exc)
        log(f"  failed: {exc}")
    finally:
        gen.close()
    steps = sorted(rows, key=lambda r: r["rate"])
    result = {"capacity_per_s": good * args.clients if good else 0, "server_us_per_delivery": cost(steps)}
    return {**result, "steps": steps, **({"failed": failed} if failed else {})}


def cost(steps):
    """Server CPU per delivery near capacity: the median of the three most loaded passing steps (at light load
    the idle work of each process would count against too few deliveries)."""
    costs = [s["server_us_per_delivery"] for s in steps if s["ok"]][-3:]
    return sorted(costs)[len(costs) // 2] if costs else None


def bare(args):
    log("fanout: bare websockets broadcaster on 127.0.0.1")
    with open(LOGS / "bare.log", "w") as bare_log:
        server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py"), str(BARE_PORT)], stderr=bare_log)
        try:
            time.sleep(1)
            return sweep(("127.0.0.1", BARE_PORT), args, {server.pid: "bare"})
        finally:
            server.terminate()
            server.wait(10)


def stack(args, config):
    log(f"fanout: {config} {CONFIGS[config]}")
    result = sweep((container_ip(STACK), 80), args, stack_pids(), mint_grant())
    result["vars"] = CONFIGS[config]
    if "failed" in result:  # what the ASGI servers logged about it
        result["server_errors"] = server_errors()
        log("  " + "\n  ".join(result["server_errors"]))
    return result


def server_errors(limit=5):
    """The last distinct exception lines of bench-stack's ASGI logs (`Error:` / `Exception` lines)."""
    command = "grep -hE '^[A-Za-z_.]+(Error|Exception)\\b' /var/log/devops/*-[0-9].log | tail -n 200"
    lines = sh("docker", "exec", STACK, "sh", "-c", command, check=False).stdout.splitlines()
    return list(dict.fromkeys(line.strip() for line in reversed(lines)))[:limit]
