"""results/results.md from results/*.json (whichever benchmarks have run), and the fan-out plot."""

import json
import os
import sys
import time

from .cluster import SETUPS, at_capacity, sort_key
from .common import RESULTS, ROOT, log, sh
from .fanout import cost


def ms(value):
    return "n/a" if value is None else f"{value:.1f}"


def ratio(a, b):
    return f"{a / b:.3g}" if a and b else "n/a"


def header(written, cpus):
    return [
        "# Benchmark results",
        "",
        f"Written by `bin/toolkit bench` ({written} UTC, {cpus} CPUs: compare the ratios, not the absolute figures).",
        "",
    ]


def fanout(fan):
    bare = fan["configs"].get("bare", {}).get("capacity_per_s")
    lines = [
        "## Websocket fan-out",
        "",
        f"{fan['clients']} clients on one service group, one sender; capacity = highest offered "
        f"deliveries/s with 100 % delivered and p99 < {fan['p99_limit_ms']} ms. Generator: "
        f"{fan['workers']} receiver processes + 1 sender process.",
        "",
        "| configuration | capacity deliveries/s | ÷ bare | server CPU µs per delivery | bare's CPU ÷ this | vars |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    bare_cost = cost(fan["configs"]["bare"]["steps"]) if "bare" in fan["configs"] else None
    failures = []
    for name, cfg in fan["configs"].items():
        cfg_cost = cost(cfg["steps"])
        label = f"{name} (**failed**)" if "failed" in cfg else name
        lines.append(
            f"| {label} | {cfg['capacity_per_s']:.0f} | {ratio(cfg['capacity_per_s'], bare)} | "
            f"{cfg_cost or 0:.1f} | {ratio(bare_cost, cfg_cost)} | `{json.dumps(cfg.get('vars', {}))}` |"
        )
        if "failed" in cfg:
            errors = "; ".join(f"`{line}`" for line in cfg.get("server_errors", [])) or "none logged"
            failures.append(f"- **{name} failed**: {cfg['failed']}. The ASGI servers logged: {errors}.")
    lines += ["", *failures] if failures else []
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
    return lines + ["", "</details>", ""]


def http(configs):
    lines = [
        "## HTTP: nginx -> uwsgi against uwsgi alone (`GET /healthz`, wrk inside the container, connections = "
        "uwsgi processes x threads)",
        "",
        "| configuration | path | connections | requests/s | p99 ms | errors | wrk CPU | ÷ direct (req/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config, rows in configs.items():
        direct = rows["direct uwsgi"]["rps"]
        for path, r in rows.items():
            lines.append(
                f"| {config} | {path} | {r.get('connections', '')} | {r['rps']:.0f} | {r['p99_ms']:.1f} | "
                f"{r['errors']} | {r['wrk_cpu']:.2f} | {ratio(r['rps'], direct)} |"
            )
    return lines + [""]


def push(kinds):
    lines = [
        "## Push latency to a connected websocket client (through nginx)",
        "",
        "| path | n | received | min ms | p50 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, r in kinds.items():
        lines.append(
            f"| {kind} | {r['n']} | {r['received']} | {ms(r['min_ms'])} | {ms(r['p50_ms'])} | {ms(r['max_ms'])} |"
        )
    return lines + [""]


def provision(p):
    lines = [
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
    # Task figures (results written before the runner read Ansible's JSON callback have none).
    for run, what in (("converge", "The converge"), ("rerun", "The re-run")):
        if f"{run}_tasks" in p:
            slowest = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in p[f"{run}_slowest"])
            lines += [
                f"{what} ran {p[f'{run}_tasks']} tasks ({p[f'{run}_skipped']} skipped); the slowest: {slowest}.",
                "",
            ]
    return lines


IMAGE_GOAL_MB = 200  # issue goal for the modern image, start to healthy not slower than the full venv's


def image(i):
    lines = ["## Image (playbooks/image.yml): the venv as installed against the trimmed default", ""]
    if not i["measured"]:
        return lines + [f"Not measured: {i['reason']}.", ""]
    if "builds" not in i:  # a result file of the single build this report used to show
        return lines + [f"{i['build_s']:.0f} s, image {i['image']}, {i['size_mb']} MB", ""]
    builds = i["builds"]
    full = builds.get("full", {})
    lines += [
        f"Goal: {IMAGE_GOAL_MB} MB, start to healthy not slower than the full venv's. Start to healthy = from `docker "
        "run` until the image's HEALTHCHECK command succeeds (memory channel layer), alternating rounds.",
        "",
        "| build | size MB | ÷ goal | build s | start to healthy s (median) | each round | ÷ full (start) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, b in builds.items():
        if not b["measured"]:
            lines.append(f"| {name} | not measured: {b['reason']} | | | | | |")
            continue
        start, base = b.get("start_median_s"), full.get("start_median_s")
        ratio = round(start / base, 2) if start and base else ""
        rounds = ", ".join(str(t) for t in b.get("start_s", []))
        lines.append(
            f"| {name} | {b['size_mb']} | {round(b['size_mb'] / IMAGE_GOAL_MB, 2)} | {b['build_s']:.0f} | {start} | "
            f"{rounds} | {ratio} |"
        )
    for name, b in builds.items():
        if b.get("space"):
            lines += ["", f"<details><summary>biggest directories, {name}</summary>", "", "```"]
            lines += [*b["space"], "```", "", "</details>"]
    return lines + [""]


def cores(value):
    return "" if value is None else f"{value:.2f}"


def per_host(counts):
    return " / ".join(str(counts.get(host, 0)) for host in ("app1", "app2")) if counts else "n/a"


def by_container(cpu):
    """Cores per container ("lb 0.21 app1 0.85 ..."), summed over its processes."""
    totals = {}
    for label, value in sorted(cpu.items(), key=lambda item: sort_key(item[0])):
        container = label.split()[0]
        totals[container] = totals.get(container, 0) + value
    return " ".join(f"{k} {v:.2f}" for k, v in totals.items())


def cluster(c):
    """One app host against two, through the balancer: headline figures, then the CPU of every process."""
    fan, web, setups = c.get("fanout", {}), c.get("http", {}), list(SETUPS)
    peak = {name: at_capacity(fan[name]) if name in fan else None for name in setups}

    def row(what, values, compare=True):
        cells = [v if isinstance(v, str) else ("n/a" if v is None else f"{v:.0f}") for v in values]
        last = ratio(values[1], values[0]) if compare and not isinstance(values[0], str) else ""
        return f"| {what} | {' | '.join(cells)} | {last} |"

    def fig(part, name, key):
        return part.get(name, {}).get(key)

    lines = [
        "## Cluster: one app host against two, through the balancer",
        "",
        f"`bin/toolkit bench cluster`: the local cluster of `bin/toolkit cluster` (HAProxy on devops-cluster-lb; "
        f"nginx, {c['asgi_processes']} x {'/'.join(c['asgi'])} and uwsgi {c['uwsgi']['app1']} on devops-cluster-app1 "
        f"and -app2; Redis on devops-cluster-redis), every container on this machine's {c['cpus']} CPUs. "
        "One app host = app2 drained in the balancer (no new sessions; it keeps running). Fan-out: the fan-out sweep "
        f"({c['clients']} clients, one sender, p99 < {c['p99_limit_ms']} ms) against the balancer's address. "
        f"HTTP: `GET /healthz`, wrk -t1 -c{c['http_connections']} inside devops-cluster-lb against its 127.0.0.1:80 "
        f"(both hosts' uwsgi threads), alternating {c['http_seconds']} s rounds, medians.",
        "",
        "| figure | one app host | two app hosts | two ÷ one |",
        "| --- | ---: | ---: | ---: |",
        row("fan-out capacity, deliveries/s", [fig(fan, n, "capacity_per_s") for n in setups]),
        row(
            "fan-out server CPU µs per delivery (all containers)",
            [cost(fan[n]["steps"]) if n in fan else None for n in setups],
        ),
        row("fan-out websockets per app host (app1 / app2)", [per_host(fig(fan, n, "websockets")) for n in setups]),
        row("HTTP requests/s", [fig(web, n, "rps") for n in setups]),
        row("HTTP requests/s of each round", [", ".join(map(str, fig(web, n, "rounds") or [])) for n in setups]),
        row("HTTP p99 ms", [ms(fig(web, n, "p99_ms")) for n in setups], compare=False),
        row("HTTP errors", [fig(web, n, "errors") for n in setups], compare=False),
        row("HTTP server CPU µs per request (all containers)", [fig(web, n, "server_us_per_request") for n in setups]),
        row("HTTP answers per app host (app1 / app2)", [per_host(fig(web, n, "answers")) for n in setups]),
        "",
    ]
    columns = [(f"fan-out, {n}", (peak[n] or {}).get("server_cpu", {})) for n in setups]
    columns += [(f"HTTP, {n}", web.get(n, {}).get("cpu", {})) for n in setups]
    harness = [(s["sender_cpu"] + sum(s["receiver_cpu"])) if s else None for s in peak.values()]
    harness += [web[n]["wrk_cpu"] if n in web else None for n in setups]
    offered = [f"{s['offered_per_s']:.0f}/s" if s else "n/a" for s in peak.values()]
    offered += [f"{web[n]['rps']:.0f} req/s" if n in web else "n/a" for n in setups]
    labels = sorted({label for _, cpu in columns for label in cpu}, key=sort_key)
    lines += [
        "CPU of each process, in cores (fraction of one CPU): fan-out at the highest passing step, HTTP the median "
        "of the rounds. ASGI processes one by one; nginx, uwsgi and HAProxy summed over their master and workers; "
        "other = the rest of the container (systemd, journald, supervisord, ...).",
        "",
        f"| container | process | {' | '.join(name for name, _ in columns)} |",
        "| --- | --- |" + " ---: |" * len(columns),
        f"| | load | {' | '.join(offered)} |",
    ]
    for label in labels:
        container, _, name = label.partition(" ")
        lines.append(f"| {container} | {name} | {' | '.join(cores(cpu.get(label)) for _, cpu in columns)} |")
    stack = [sum(cpu.values()) if cpu else None for _, cpu in columns]
    every = [a + b if a is not None and b is not None else None for a, b in zip(stack, harness)]
    machine = [(s or {}).get("machine_cpu") for s in peak.values()] + [fig(web, n, "machine_cpu") for n in setups]
    idle = [c["cpus"] - v if v is not None else None for v in machine]
    lines += [
        f"| **all containers** | | {' | '.join(cores(v) for v in stack)} |",
        f"| load generator | fan-out: sender + receivers; HTTP: wrk | {' | '.join(cores(v) for v in harness)} |",
        f"| **these processes together** | | {' | '.join(cores(v) for v in every)} |",
        f"| **machine busy** | /proc/stat: every process and the kernel | {' | '.join(cores(v) for v in machine)} |",
        f"| idle | of {c['cpus']} CPUs | {' | '.join(cores(v) for v in idle)} |",
        "",
        "<details><summary>every fan-out step (CPU per container)</summary>",
        "",
        "| app hosts | offered/s | delivered/s | % delivered | p50 ms | p99 ms | max ms | containers' CPU (cores) | "
        "machine busy | sender CPU | receiver CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for name in setups:
        for s in fan.get(name, {}).get("steps", []):
            lines.append(
                f"| {name} | {s['offered_per_s']:.0f} | {s['delivered_per_s']:.0f} | {s['delivered_pct']:.2f} | "
                f"{s['p50'] or 0:.1f} | {s['p99'] or 0:.1f} | {s['max'] or 0:.1f} | {by_container(s['server_cpu'])} | "
                f"{cores(s.get('machine_cpu'))} | "
                f"{s['sender_cpu']:.2f} | {' '.join(f'{v:.2f}' for v in s['receiver_cpu'])} |"
            )
    return lines + ["", "</details>", ""]


SECTIONS = (
    ("fanout", fanout),
    ("http", http),
    ("push", push),
    ("provision", provision),
    ("image", image),
    ("cluster", cluster),
)


def render(data, written, cpus):
    """The Markdown of results.md from the benchmarks' results, by name."""
    lines = header(written, cpus)
    for name, section in SECTIONS:
        if name in data:
            lines += section(data[name])
    return "\n".join(lines)


def write(results=RESULTS):
    data = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    (results / "results.md").write_text(render(data, time.strftime("%Y-%m-%d %H:%M"), os.cpu_count()))
    if "fanout" in data:
        sh(sys.executable, str(ROOT / "bench" / "plot.py"), str(results / "fanout.json"), str(results / "fanout.png"))
    log(f"wrote {results / 'results.md'}")
