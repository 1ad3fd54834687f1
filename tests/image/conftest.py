"""Fixtures of the image tests: the built image, a docker network with a Redis container, the running stack.

The image is built first by playbooks/image.yml (bin/toolkit image-test does both); its result file names it.
    IMAGE_PROFILE=modern (default) | legacy | legacy-fixed     which build to test
    IMAGE_RESULT=path/to/result.json                           or name the result file directly
                                                               (.cache/image/modern-redis.json: Redis bundled)
Everything created here is named image-test-* and removed again, also when a test fails.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILE = os.environ.get("IMAGE_PROFILE", "modern")
RESULT_FILE = Path(os.environ.get("IMAGE_RESULT", ROOT / ".cache" / "image" / f"{PROFILE}.json")).resolve()
WSPROBE = ROOT / "playbooks" / "files" / "wsprobe.py"
# A Redis server for the tests, made once from the local base image (no registry here).
REDIS_IMAGE = "image-test-redis:bookworm"
REDIS_RECIPE = "apt-get install redis-server (bookworm) v1"
HEALTHY_WITHIN = 120  # seconds from docker run to "healthy"
REGISTRY_CACHE = ROOT / ".cache" / "docker-registry"


def docker(*args, timeout=60, check=True, **kwargs):
    """Run the docker CLI; return the CompletedProcess (text). Fails the test on a non-zero exit if check."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr.strip()}")
    return result


def inspect(name, template):
    return docker("inspect", "-f", template, name).stdout.strip()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def built():
    """What playbooks/image.yml recorded about the image under test."""
    if not RESULT_FILE.exists():
        pytest.fail(
            f"{RESULT_FILE} is missing: build first (ansible-playbook playbooks/image.yml -e image_profile={PROFILE})"
        )
    result = json.loads(RESULT_FILE.read_text())
    if docker("image", "inspect", result["ref"], check=False).returncode != 0:
        pytest.fail(f"{result['ref']} (from {RESULT_FILE}) is not a local image: build it again")
    return result


@pytest.fixture(scope="session")
def image(built):
    return built["ref"]


@pytest.fixture(scope="session")
def image_config(image):
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


@pytest.fixture(scope="session")
def run_id():
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def network(run_id):
    name = f"image-test-net-{run_id}"
    docker("network", "create", name)
    yield name
    docker("network", "rm", name, check=False)


@pytest.fixture(scope="session")
def redis_image():
    """image-test-redis:bookworm: Debian's redis-server on the local base image, built once and reused."""
    if (
        docker(
            "image",
            "inspect",
            "-f",
            '{{ index .Config.Labels "org.devops-channels.recipe" }}',
            REDIS_IMAGE,
            check=False,
        ).stdout.strip()
        == REDIS_RECIPE
    ):
        return REDIS_IMAGE
    builder = f"image-test-redis-build-{secrets.token_hex(4)}"
    docker("run", "-d", "--name", builder, "devops-channels/debian:bookworm", "sleep", "infinity")
    try:
        docker(
            "exec",
            "-e",
            "DEBIAN_FRONTEND=noninteractive",
            builder,
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q --no-install-recommends redis-server "
            "&& apt-get clean && rm -rf /var/lib/apt/lists/*",
            timeout=300,
        )
        docker(
            "commit",
            "--change",
            "CMD []",
            "--change",
            f"LABEL org.devops-channels.recipe={REDIS_RECIPE!r}",
            builder,
            REDIS_IMAGE,
            timeout=120,
        )
    finally:
        docker("rm", "-f", builder, check=False)
    return REDIS_IMAGE


@pytest.fixture(scope="session")
def redis(redis_image, network, run_id):
    """Redis on the test network as host "redis", password protected; returns its REDIS_URL."""
    name = f"image-test-redis-{run_id}"
    password = token(32)
    # The password reaches redis-server on stdin, not on its command line.
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--network-alias",
        "redis",
        "-e",
        f"REDIS_PASSWORD={password}",
        redis_image,
        "sh",
        "-c",
        'printf "requirepass %s\\n" "$REDIS_PASSWORD" | exec redis-server - --bind 0.0.0.0 --save "" --appendonly no',
    )
    try:
        wait_until(
            lambda: (
                docker("exec", "-e", f"REDISCLI_AUTH={password}", name, "redis-cli", "ping", check=False).stdout.strip()
                == "PONG"
            ),
            30,
            what="Redis to answer PING",
        )
        yield f"redis://:{password}@redis:6379/0"
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def app_secrets():
    return {"DJANGO_SECRET_KEY": token(50), "DEPLOY_PUSH_TOKEN": token(40)}


def env_args(env):
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


@pytest.fixture(scope="session")
def stack(request, image, built, image_config, network, app_secrets, run_id):
    """The image running with the test Redis (or its bundled one), port 80 published on 127.0.0.1, healthy."""
    name = f"image-test-app-{run_id}"
    stop_timeout = image_config["Labels"]["org.devops-channels.stop-timeout"]
    if built["bundle_redis"]:
        env = dict(app_secrets, REDIS_PASSWORD=token(32))
    else:
        env = dict(app_secrets, REDIS_URL=request.getfixturevalue("redis"))
    started = time.monotonic()
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--stop-timeout",
        stop_timeout,
        "-p",
        f"127.0.0.1::{built['port']}",
        *env_args(env),
        image,
    )
    try:

        def healthy():
            state = json.loads(docker("inspect", "-f", "{{ json .State }}", name).stdout)
            if not state["Running"]:
                pytest.fail(
                    f"{name} exited ({state['ExitCode']}):\n{docker('logs', name, check=False).stdout}"
                    f"{docker('logs', name, check=False).stderr}"
                )
            return state.get("Health", {}).get("Status") == "healthy"

        wait_until(healthy, HEALTHY_WITHIN, interval=1, what=f"{name} to report healthy")
        port = int(docker("port", name, f"{built['port']}/tcp").stdout.splitlines()[0].rsplit(":", 1)[1])
        yield {
            "name": name,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "ws": f"ws://127.0.0.1:{port}",
            "healthy_after": round(time.monotonic() - started, 1),
            "stop_timeout": int(stop_timeout),
        }
    finally:
        docker("rm", "-f", name, check=False)


def wsprobe(*args, timeout=30):
    return subprocess.run(["python3", str(WSPROBE), *args], capture_output=True, text=True, timeout=timeout)


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def registry_binary():
    """Debian's docker-registry: from PATH, else the binary taken from its .deb into .cache/ (installing the
    package would start a registry service on all interfaces; the tests run their own on 127.0.0.1)."""
    cached = REGISTRY_CACHE / "docker-registry"
    found = shutil.which("docker-registry") or cached
    if Path(found).exists():
        return str(found)
    REGISTRY_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            ["apt-get", "download", "docker-registry"], cwd=download, check=True, capture_output=True, timeout=120
        )
        deb = next(Path(download).glob("docker-registry_*.deb"))
        subprocess.run(
            f"dpkg-deb --fsys-tarfile {deb} | tar -xO ./usr/bin/docker-registry > {cached}.tmp",
            shell=True,
            check=True,
            timeout=60,
        )
        Path(f"{cached}.tmp").chmod(0o755)
        Path(f"{cached}.tmp").rename(cached)
    return str(cached)


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A registry served by Debian's docker-registry on 127.0.0.1 only; returns host:port."""
    binary = registry_binary()
    port = free_port()
    storage = tmp_path_factory.mktemp("registry")
    config = storage / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {storage}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(storage / "registry.log", "w")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:

        def up():
            try:
                return http_get(f"http://127.0.0.1:{port}/v2/", timeout=2)[0] == 200
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"docker-registry exited: {(storage / 'registry.log').read_text()}")
                return False

        wait_until(up, 30, what="the registry to answer /v2/")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
