"""HTTP: `GET /healthz` through nginx -> uwsgi, against the same uwsgi ini and app served directly.

wrk runs inside bench-stack (installed there from Debian) against 127.0.0.1: uwsgi's http-socket answers
without keep-alive, and a new TCP connection per request from the host would run out of ephemeral ports
(TIME_WAIT); on loopback the kernel reuses them. The CPU wrk used is measured by a python3 wrapper there.
"""

import re
import shlex

from .common import HOST, STACK, log, sh
from .target import layout

WRK = (
    "import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout; "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(out); print('CPU', usage.ru_utime + usage.ru_stime)"
)
WRK_INSTALL = "command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null"
READY = (
    "for i in $(seq 60); do python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:8001/healthz\")' "
    "2>/dev/null && exit 0; sleep 0.5; done; exit 1"
)
PATHS = {"direct uwsgi": "http://127.0.0.1:8001/healthz", "nginx -> uwsgi": "http://127.0.0.1:80/healthz"}


def direct_uwsgi(ini, root, user):
    """A second uwsgi, run like the deployed one (its user, the app's bin/run wrapper, its venv), with the
    deployed ini's unix socket swapped for a keep-alive http11-socket on loopback; stats socket and chain-reload
    trigger dropped so the live instance is untouched."""
    ini, run, venv_uwsgi, user = (
        shlex.quote(v) for v in (ini, f"{root}/bin/run", f"{root}/current/venv/bin/uwsgi", user)
    )
    return (
        "sed -e 's|^socket = .*|http11-socket = 127.0.0.1:8001|' -e '/^stats = /d' -e '/^touch-chain-reload/d' "
        f"-e '/^chmod-socket/d' -e '/^vacuum/d' {ini} > /tmp/bench-uwsgi.ini; "
        "echo $$ > /tmp/bench-uwsgi.pid; "
        f'exec setpriv --reuid={user} --regid="$(id -g {user})" --init-groups {run} '
        f"{venv_uwsgi} --ini /tmp/bench-uwsgi.ini >/tmp/bench-uwsgi.log 2>&1"
    )


def parse_wrk(out, seconds):
    """wrk --latency's report (and the wrapper's CPU line): requests/s, p99, errors, wrk's CPU in cores."""
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


def wrk(url, seconds, connections):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {HOST}", url]
    return parse_wrk(sh("docker", "exec", STACK, "python3", "-c", WRK, *argv).stdout, seconds)


def run(args, config):
    """wrk with as many connections as uwsgi has worker threads (processes x threads): the direct path keeps
    each connection alive (http11-socket) and a kept-alive connection holds one thread."""
    stack = layout()
    direct = direct_uwsgi(stack["uwsgi_ini"], stack["uwsgi_root"], stack["uwsgi_user"])
    ini = sh("docker", "exec", STACK, "cat", stack["uwsgi_ini"]).stdout
    workers = int(re.search(r"^processes = (\d+)", ini, re.M)[1]) * int(re.search(r"^threads = (\d+)", ini, re.M)[1])
    connections = args.http_connections or workers
    sh("docker", "exec", STACK, "sh", "-c", WRK_INSTALL)
    sh("docker", "exec", "-d", STACK, "sh", "-c", direct)
    try:
        sh("docker", "exec", STACK, "sh", "-c", READY)
        for url in PATHS.values():
            wrk(url, 2, connections)  # warm-up
        # Alternating short rounds, median of each: a burst of other load on the machine hits both paths alike.
        runs = {name: [] for name in PATHS}
        for _ in range(args.http_rounds):
            for name, url in PATHS.items():
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
