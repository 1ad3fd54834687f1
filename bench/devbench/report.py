"""results/results.md from results/*.json (whichever benchmarks have run), and the fan-out plot."""

import json
import os
import sys
import time

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


def image(i):
    return [
        "## Image build (playbooks/image.yml)",
        "",
        f"{i['build_s']:.0f} s, image {i['image']}, {i['size_mb']} MB"
        if i["measured"]
        else f"Not measured: {i['reason']}.",
        "",
    ]


SECTIONS = (("fanout", fanout), ("http", http), ("push", push), ("provision", provision), ("image", image))


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
