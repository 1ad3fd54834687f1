"""Run the benchmarks and write bench/results/: one JSON file per benchmark, results.md and fanout.png.

    python bench/run.py [provision|http|push|fanout|image|cluster|report ...] [--configs a,b] [--clients C]

Every figure stands beside the floor it is held against, measured in the same run: converge against
installing the same packages by hand, nginx->uwsgi against uwsgi alone, the deployed websocket stack
against a bare `websockets` broadcaster, push latency against the cost of the transport alone. Absolute
numbers move with the machine's load, so read the ratios.

Targets are containers named bench-* only, and for the part `cluster` (not in the default set: it converges the
local cluster of `bin/toolkit cluster` when it is not up, about 8 minutes) the devops-cluster-* containers; load
goes to 127.0.0.1 and to those containers only. The parts live in devbench/ (see bench/README.md, "Files").
"""

import argparse
import json
import time

from devbench import cluster, fanout, http, image, provision, push, report
from devbench.common import LOGS, RESULTS, STACK, log
from devbench.configs import CONFIGS, FANOUT_CONFIGS, HTTP_CONFIGS
from devbench.playbook import converge
from devbench.target import exists, start_container

BENCHMARKS = ["provision", "http", "push", "fanout", "image"]  # the default set
EXTRA = ["cluster"]  # only when named


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", default=[], help=f"{' '.join(BENCHMARKS)} (default: these), {' '.join(EXTRA)}, or report"
    )
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
    args.names = args.names or BENCHMARKS
    unknown = set(args.names) - {*BENCHMARKS, *EXTRA, "report"}
    if unknown or set(args.configs) - set(CONFIGS):
        parser.error(f"unknown benchmark or configuration: {unknown or set(args.configs) - set(CONFIGS)}")
    return args


def save(name, result):
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))


def main():
    args = arguments()
    names = args.names
    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if "provision" in names:
        save("provision", provision.run(args))
    # One converge per stack configuration; every benchmark that needs that configuration runs on it.
    stack_benches = {"http", "push", "fanout"} & set(names)
    configs = ["default"] * ("push" in names) + HTTP_CONFIGS * ("http" in names) + args.configs * ("fanout" in names)
    http_rows = {}
    fan = {"clients": args.clients, "workers": args.workers, "p99_limit_ms": args.p99_limit, "configs": {}}
    if "fanout" in names:
        fan["configs"]["bare"] = fanout.bare(args)
    fresh = "provision" in names  # bench-stack was just converged with the defaults
    for config in dict.fromkeys(configs) if stack_benches else []:
        if not exists(STACK):
            start_container(STACK, args.port)
        if not (fresh and config == "default"):
            seconds, recap = converge(CONFIGS[config])
            log(f"{config}: converged in {seconds:.0f} s ({recap.changed(STACK)} changed) with {CONFIGS[config]}")
        fresh = False
        if "http" in names and config in HTTP_CONFIGS:
            http_rows[config] = http.run(args, config)
        if "push" in names and config == "default":
            save("push", push.run(args))
        if "fanout" in names and config in args.configs:
            fan["configs"][config] = fanout.stack(args, config)
    if http_rows:
        save("http", http_rows)
    if "fanout" in names:
        save("fanout", fan)
    if "image" in names:
        save("image", image.run(args))
    if "cluster" in names:
        save("cluster", cluster.run(args))
    report.write()
    log(f"bench done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
