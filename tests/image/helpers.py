"""Helpers of the image tests: which build to test, the layout it was built with, docker, waiting, HTTP, websockets.

The image is built first by playbooks/image.yml (bin/toolkit image-test does both); its result file names it.
    IMAGE_PROFILE=modern (default) | legacy | legacy-fixed     which build to test
    IMAGE_RESULT=path/to/result.json                           or name the result file directly
                                                               (.cache/image/modern-redis.json: Redis bundled)
    IMAGE_ASGI_SERVER=daphne | uvicorn                         the server the image must run (default: the one its
                                                               label names), e.g. after -e asgi_server=uvicorn
"""

import functools
import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
PROFILE = os.environ.get("IMAGE_PROFILE", "modern")
RESULT_FILE = Path(os.environ.get("IMAGE_RESULT", ROOT / ".cache" / "image" / f"{PROFILE}.json")).resolve()
ASGI_SERVER = os.environ.get("IMAGE_ASGI_SERVER", "")
ASGI_SERVERS = ("daphne", "uvicorn")
WSPROBE = ROOT / "playbooks" / "files" / "wsprobe.py"
HEALTHY_WITHIN = 120  # seconds from docker run to "healthy"
# The websocket checks use services image-*: the running stack lets clients send to them (a runtime setting).
CLIENT_WRITE_SERVICES = "image-*"

# The one way the tests make images of their own: Debian packages installed into the local base image that the
# build starts from (scripts/build-base-image.sh; no registry is needed, nothing is installed on this host).
TEST_IMAGE_BASE = "devops-channels/debian:bookworm"
# Redis for the stack, Debian's docker-registry for the push: one image, built once and reused while its base
# image and its package list stay the same.
SERVICES_IMAGE = "image-test-services:bookworm"
SERVICES_PACKAGES = ("redis-server", "docker-registry")
RECIPE_LABEL = "org.devops-channels.recipe"
BASE_LABEL = "org.devops-channels.base-id"

# The layout contract of inventory/group_vars/all.yml, read through Ansible with the repository's ansible.cfg.
LAYOUT_QUERY = {
    "project": "devops_project",
    "user": "devops_user",
    "root": "devops_root",
    "run_dir": "devops_run_dir",
    "log_dir": "devops_log_dir",
    "env_file": "devops_env_file",
    "app_user": "app_user",
    "entrypoint": "image_entrypoint",
}


def docker(*args, timeout=60, check=True, **kwargs):
    """Run the docker CLI; return the CompletedProcess (text). Fails the test on a non-zero exit if check."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr.strip()}")
    return result


def inspect(name, template):
    return docker("inspect", "-f", template, name).stdout.strip()


def wait_until(predicate, timeout, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def token(size=48):
    """A random secret from letters and digits only (safe in URLs and shell words)."""
    return "".join(
        secrets.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(size)
    )


def env_args(env):
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


def wsprobe(*args, timeout=30):
    return subprocess.run(["python3", str(WSPROBE), *args], capture_output=True, text=True, timeout=timeout)


def grant(container, service, *options):
    """A grant for `service` from the app in `container` (`<app_user>-manage grant`; `options`: --write to send too),
    which a websocket client offers (wsprobe --grant)."""
    manage = f"{layout()['app_user']}-manage"  # the app role's wrapper of manage.py
    return docker("exec", container, manage, "grant", service, *options).stdout.strip()


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def ansible_env():
    """The environment for Ansible commands of the tests: the repository's venv and ansible.cfg."""
    return {
        "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "HOME": os.environ.get("HOME", "/root"),
    }


@functools.cache
def layout():
    """The layout contract as the inventory defines it: {"user": "devops", "root": "/srv/devops", ...}."""
    expression = "{{ {" + ", ".join(f'"{key}": {var}' for key, var in LAYOUT_QUERY.items()) + "} }}"
    result = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-m", "ansible.builtin.debug", "-a", f"msg={expression}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(ansible_env(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
    )
    if result.returncode != 0:
        pytest.fail(f"reading the layout from the inventory failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    values = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert set(values) == set(LAYOUT_QUERY) and all(isinstance(v, str) and v for v in values.values()), values
    return values


def published_port(container, port):
    """The host port docker published for the container's port (published on 127.0.0.1 only)."""
    return int(docker("port", container, f"{port}/tcp").stdout.splitlines()[0].rsplit(":", 1)[1])


def package_image(name, packages, base=TEST_IMAGE_BASE):
    """An image of Debian packages on the local base image: built once, rebuilt when the base image or the package
    list changes. Nothing is installed on this host; the build container is removed, also after a failure."""
    base_id = docker("image", "inspect", "-f", "{{ .Id }}", base, check=False).stdout.strip()
    if not base_id:
        pytest.fail(f"{base} is missing: build it with scripts/build-base-image.sh {base.rsplit(':', 1)[1]}")
    recipe = "apt-get install " + " ".join(sorted(packages))
    found = docker("image", "inspect", "-f", "{{ json .Config.Labels }}", name, check=False).stdout.strip()
    labels = json.loads(found or "null") or {}
    if labels.get(RECIPE_LABEL) == recipe and labels.get(BASE_LABEL) == base_id:
        return name
    builder = f"image-test-build-{secrets.token_hex(4)}"
    docker("run", "-d", "--name", builder, base, "sleep", "infinity")
    try:
        docker(
            "exec",
            "-e",
            "DEBIAN_FRONTEND=noninteractive",
            builder,
            "sh",
            "-c",
            # No service starts on installation (there is no init system to ask).
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d "
            f"&& apt-get update -q && apt-get install -y -q --no-install-recommends {' '.join(sorted(packages))} "
            "&& apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d",
            timeout=600,
        )
        docker(
            "commit",
            "--change",
            "CMD []",
            "--change",
            f"LABEL {RECIPE_LABEL}={json.dumps(recipe)} {BASE_LABEL}={base_id}",
            builder,
            name,
            timeout=120,
        )
    finally:
        docker("rm", "-f", builder, check=False)
    return name
