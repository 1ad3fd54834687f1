"""Provisioning: site.yml on a fresh bench-stack and its idempotent re-run, against installing the same packages
by hand in a fresh container of the same base image."""

from .common import ROOT, STACK, log, sh, timed
from .playbook import converge
from .target import start_container

FLOOR = "bench-floor"
# The apt packages site.yml installs on a modern host (roles redis, supervisor, app, nginx).
APT_PACKAGES = ["redis-server", "supervisor", "nginx", "python3", "python3-venv", "ca-certificates"]
SLOWEST = 5  # slowest tasks recorded per converge


def figures(name, seconds, recap):
    """One converge's figures: seconds, changed count, task count (and skipped), slowest tasks."""
    tasks, skipped = recap.task_count(STACK)
    row = {
        f"{name}_s": seconds,
        f"{name}_changed": recap.changed(STACK),
        f"{name}_tasks": tasks,
        f"{name}_skipped": skipped,
        f"{name}_slowest": recap.slowest(STACK, SLOWEST),
    }
    slowest = ", ".join(f"{task} {s:.1f} s" for task, s in row[f"{name}_slowest"])
    log(f"provision: {name} {seconds:.0f} s, {row[f'{name}_changed']} changed, {tasks} tasks ({skipped} skipped)")
    log(f"provision: {name}: slowest tasks: {slowest}")
    return row


def run(args):
    log("provision: fresh bench-stack, converge site.yml")
    start_container(STACK, args.port)
    first = figures("converge", *converge())
    log("provision: idempotent re-run")
    seconds, recap = converge()
    again = {**figures("rerun", seconds, recap), "rerun_changed_tasks": recap.changed_tasks(STACK)}
    log("provision: floor: the same packages by hand")
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
        **first,
        **again,
        "floor_s": floor,
        "floor_what": f"apt-get install {' '.join(APT_PACKAGES)}; venv; pip install modern.txt",
    }
