"""The bench-* containers: created like molecule's systemd containers, and what runs and is deployed in them."""

import functools
import sys
import time

from .common import STACK, sh
from .playbook import host_vars

IMAGE = "devops-channels/debian:bookworm"

# The flags molecule/default gives its systemd containers.
SYSTEMD_FLAGS = (
    "--cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns=host "
    "-v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3"
).split()

# The stack's programs, by a part of their command line.
PROGRAMS = (
    ("daphne", "/daphne "),
    ("uvicorn", "/uvicorn "),
    ("redis", "redis-server"),
    ("nginx", "nginx: worker"),
    ("uwsgi", "/uwsgi "),
)

# What the inventory deploys onto bench-stack (wired from the layout in inventory/group_vars/all.yml).
LAYOUT = (
    '{"uwsgi_root": uwsgi_app_root, "uwsgi_user": uwsgi_user, "uwsgi_ini": uwsgi_config_file, '
    '"app_user": app_user, "push_token": app_push_token}'
)


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


def exists(name):
    return sh("docker", "inspect", name, check=False).returncode == 0


def container_ip(name):
    return sh(
        "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).stdout.strip()


def processes(name=STACK):
    """(host pid, command line) of each process of the container."""
    rows = []
    for line in sh("docker", "top", name, "-eo", "pid,args").stdout.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        rows.append((int(pid), args.strip()))
    return rows


def stack_pids():
    """Host pids of the stack's processes, labelled by program."""
    pids = {}
    for pid, args in processes():
        for label, needle in PROGRAMS:
            if needle in args:
                pids[pid] = label
    return pids


@functools.cache
def layout():
    """uwsgi_root, uwsgi_user, uwsgi_ini, app_user and push_token of bench-stack, as Ansible templates them."""
    return host_vars(STACK, LAYOUT)
