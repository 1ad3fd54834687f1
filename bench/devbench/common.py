"""Where the suite reads and writes, the names of its targets, and the process helpers every module uses."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
LOGS = ROOT / ".cache" / "bench"  # run logs (git-ignored): the last converge, the bare broadcaster, the image build
INVENTORY = ROOT / "inventory" / "bench.yml"
STACK = "bench-stack"
HOST = "localhost"  # Host and Origin header: what app_allowed_hosts accepts


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
