"""Fixtures of the image tests: the built image, a docker network with a Redis container, the running stack, a
registry. Which build is tested: helpers.py. Everything created here is named image-test-* and removed again, also
when a test fails; the one image the tests make (image-test-services) is kept for the next run.
"""

import json
import secrets
import time

import pytest
from helpers import (
    ASGI_SERVER,
    ASGI_SERVERS,
    CLIENT_WRITE_SERVICES,
    HEALTHY_WITHIN,
    PROFILE,
    RESULT_FILE,
    SERVICES_IMAGE,
    SERVICES_PACKAGES,
    docker,
    env_args,
    http_get,
    inspect,
    layout,
    package_image,
    published_port,
    token,
    wait_until,
)

REGISTRY_PORT = 5000  # inside its container
# Debian's configuration asks for htpasswd logins: the test registry's own, without.
REGISTRY_CONFIG = (
    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /tmp/registry\n"
    f"http:\n  addr: 0.0.0.0:{REGISTRY_PORT}\n"
)


# The README's docker run: every capability dropped but what the stack uses (root's chown and writes into the app's
# directories at start, the setgid bit of the socket directory that gives nginx its sockets, supervisord's and
# nginx's switch to their users, nginx's port 80, signals to the programs).
CAPABILITIES = ["--cap-drop", "ALL"] + [
    arg
    for capability in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID")
    for arg in ("--cap-add", capability)
]


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
def asgi_server(image_config):
    """The ASGI server the image runs, as its label names it; IMAGE_ASGI_SERVER, when set, must agree."""
    server = image_config["Labels"].get("org.devops-channels.asgi-server")
    assert server in ASGI_SERVERS, image_config["Labels"]
    if ASGI_SERVER and server != ASGI_SERVER:
        pytest.fail(
            f"{RESULT_FILE} names an image running {server}, IMAGE_ASGI_SERVER wants {ASGI_SERVER}: build it with "
            f"ansible-playbook playbooks/image.yml -e image_profile={PROFILE} -e asgi_server={ASGI_SERVER}"
        )
    return server


@pytest.fixture(scope="session")
def paths():
    """The layout contract of the inventory the image was built with (user, root, run_dir, env_file, ...)."""
    return layout()


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
def services_image():
    """Debian's redis-server and docker-registry on the local base image (helpers.package_image)."""
    return package_image(SERVICES_IMAGE, SERVICES_PACKAGES)


@pytest.fixture(scope="session")
def redis(services_image, network, run_id):
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
        "--user",
        "redis",
        "-e",
        f"REDIS_PASSWORD={password}",
        services_image,
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


@pytest.fixture(scope="session")
def stack(request, image, built, image_config, network, app_secrets, run_id):
    """The image running with the test Redis (or its bundled one), port 80 published on 127.0.0.1, healthy; websocket
    clients may send to the tests' services (a setting from the runtime environment, as the secrets)."""
    name = f"image-test-app-{run_id}"
    stop_timeout = image_config["Labels"]["org.devops-channels.stop-timeout"]
    env = dict(app_secrets, DEPLOY_CLIENT_WRITE_SERVICES=CLIENT_WRITE_SERVICES)
    if built["bundle_redis"]:
        env["REDIS_PASSWORD"] = token(32)
    else:
        env["REDIS_URL"] = request.getfixturevalue("redis")
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
        *CAPABILITIES,
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
        port = published_port(name, built["port"])
        yield {
            "name": name,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "ws": f"ws://127.0.0.1:{port}",
            "healthy_after": round(time.monotonic() - started, 1),
            "stop_timeout": int(stop_timeout),
            "env": env,
        }
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def registry(services_image, run_id):
    """A registry served by Debian's docker-registry in a container, published on 127.0.0.1 only (docker pushes to
    127.0.0.0/8 over plain HTTP); its storage goes with the container. Returns host:port."""
    name = f"image-test-registry-{run_id}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--user",
        "docker-registry",
        "-p",
        f"127.0.0.1::{REGISTRY_PORT}",
        "-e",  # not REGISTRY_*: docker-registry reads those as overrides of its configuration
        f"CONFIG_YML={REGISTRY_CONFIG}",
        services_image,
        "sh",
        "-c",
        'printf "%s" "$CONFIG_YML" > /tmp/registry.yml && exec docker-registry serve /tmp/registry.yml',
    )
    try:
        address = f"127.0.0.1:{published_port(name, REGISTRY_PORT)}"

        def up():
            try:
                return http_get(f"http://{address}/v2/", timeout=2)[0] == 200
            except OSError:
                if inspect(name, "{{ .State.Running }}") != "true":
                    logs = docker("logs", name, check=False)
                    pytest.fail(f"docker-registry exited: {logs.stdout}{logs.stderr}")
                return False

        wait_until(up, 30, what="the registry to answer /v2/")
        yield address
    finally:
        docker("rm", "-f", name, check=False)
