"""The bench-* containers: started by roles/lab_container like molecule's hosts; what runs and is deployed in them."""

import functools
import sys

from .common import ROOT, STACK, sh
from .playbook import host_vars, playbook

IMAGE = "devops-channels/debian:bookworm"

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
    """A fresh systemd container from the base image, started by roles/lab_container (as molecule's hosts are)."""
    sh("docker", "rm", "-f", name, check=False)
    settings = {
        "lab_container_name": name,
        "lab_container_image": IMAGE,
        "lab_container_published_ports": [f"127.0.0.1:{port}:80"] if port else [],
        "lab_container_labels": {"org.devops-channels.role": "bench"},
    }
    _, returncode, recap, stderr = playbook(ROOT / "bench" / "lab-container.yml", log_name="container", extra=settings)
    if returncode != 0:
        failures = "\n".join(recap.failures()) if recap else ""
        sys.exit(f"{name}: the container did not start:\n{failures}\n{stderr[-2000:]}")


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


def mint_grant(container=STACK, user=None):
    """A grant for the benchmarks' services (bench*) that may send, from the app in `container` (`<user>-manage
    grant`; `user`: bench-stack's app user by default): the websocket clients offer it (wsload)."""
    manage = f"{user or layout()['app_user']}-manage"
    return sh("docker", "exec", container, manage, "grant", "bench*", "--write").stdout.strip()


@functools.cache
def layout():
    """uwsgi_root, uwsgi_user, uwsgi_ini, app_user and push_token of bench-stack, as Ansible templates them."""
    return host_vars(STACK, LAYOUT)
