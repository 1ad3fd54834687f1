"""The container image built by playbooks/image.yml: metadata, no baked secrets, the running stack, a graceful stop.

Run after the build:  .venv/bin/pytest -q tests/image   (bin/toolkit image-test does both).
The checks of the running container share one container; the graceful stop is the last test and ends it.
"""

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml
from helpers import (
    RESULT_FILE,
    ROOT,
    VENV_BIN,
    WSPROBE,
    ansible_env,
    docker,
    env_args,
    grant,
    http_get,
    inspect,
    wait_until,
    wsprobe,
)

SECRET_NAMES = ("DJANGO_SECRET_KEY", "REDIS_PASSWORD", "REDIS_URL", "DEPLOY_PUSH_TOKEN", "DATABASE_URL")


# --- the image ----------------------------------------------------------------------------------------------


def test_tag_names_app_version_variant_and_revision(built, asgi_server):
    """<version>-<profile>[-<server> when not daphne][-redis]-<revision>."""
    repository, tag = built["ref"].rsplit(":", 1)
    assert repository == "devops-channels/stack"
    server = "" if asgi_server == "daphne" else f"-{asgi_server}"
    variant = built["profile"] + server + ("-redis" if built["bundle_redis"] else "")
    assert built["variant"] == variant
    assert tag == f"{built['version']}-{variant}-{built['revision']}"
    assert re.fullmatch(r"[0-9a-f]{12}", built["version"])
    assert re.fullmatch(r"([0-9a-f]{12}(-dirty)?|nogit)", built["revision"])


def test_image_carries_oci_labels(image_config, built, asgi_server):
    labels = image_config["Labels"]
    assert labels["org.opencontainers.image.version"] == built["version"]
    assert labels["org.opencontainers.image.revision"] == built["revision"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"])
    assert labels["org.opencontainers.image.title"].startswith("devops-channels stack")
    assert labels["org.devops-channels.profile"] == built["profile"]
    assert labels["org.devops-channels.redis"] == ("bundled" if built["bundle_redis"] else "external")
    assert labels["org.devops-channels.suite"] == built["suite"]
    assert f"nginx, {asgi_server} and uwsgi" in labels["org.opencontainers.image.description"]


def test_image_exposes_http_and_checks_healthz(image_config, built):
    assert f"{built['port']}/tcp" in image_config["ExposedPorts"]
    health = image_config["Healthcheck"]
    assert any("/healthz" in part for part in health["Test"])
    assert health["Interval"] > 0 and health["Timeout"] > 0 and health["Retries"] >= 1


def test_image_stops_with_sigterm_and_announces_its_stop_timeout(image_config):
    assert image_config["StopSignal"] == "SIGTERM"
    # The ASGI server (15 s) and uwsgi (35 s) stop one group after the other, then nginx: the timeout must cover them.
    assert int(image_config["Labels"]["org.devops-channels.stop-timeout"]) >= 15 + 35 + 10


def test_image_starts_supervisord_through_the_entrypoint(image_config, paths):
    # The app's entrypoint checks the environment, then execs CMD: supervisord in the foreground (PID 1).
    assert image_config["Entrypoint"] == [paths["entrypoint"]]
    supervisor = yaml.safe_load((ROOT / "roles/supervisor/vars/main.yml").read_text())
    assert image_config["Cmd"] == supervisor["supervisor_command"]
    assert image_config["Cmd"][0].endswith("/supervisord") and "--nodaemon" in image_config["Cmd"]


def test_image_config_holds_no_secret(image_config):
    names = {entry.split("=", 1)[0] for entry in image_config.get("Env") or []}
    assert not names & set(SECRET_NAMES)


def test_env_file_of_the_image_holds_no_secret(image, paths):
    content = docker("run", "--rm", "--entrypoint", "cat", image, paths["env_file"]).stdout
    assert "DJANGO_ALLOWED_HOSTS=" in content  # the file is there, with the non-secret settings
    for name in SECRET_NAMES:
        assert not re.search(rf"^{name}=", content, re.M), name


def test_no_secret_of_the_local_inventory_is_in_the_image(image, paths):
    """The inventory generates secrets into .secrets/; none of them may have been baked in."""
    values = [p.read_text().strip() for p in (ROOT / ".secrets").rglob("*") if p.is_file()]
    values = [v for v in values if len(v) >= 16]
    if not values:
        pytest.skip("no generated secrets in .secrets/ to look for")
    dirs = " ".join(sorted({"/etc", "/srv", "/usr/local", "/var/lib", "/root", paths["root"], paths["env_file"]}))
    script = f'for s in "$@"; do grep -rqsF -- "$s" {dirs} && echo FOUND; done; true'
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script, "sh", *values, timeout=120).stdout
    assert "FOUND" not in out


def test_no_build_tools_in_the_image(image, paths):
    out = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "for t in gcc cc c++ make patch git pip pip3; do command -v $t; done; "
        f"ls {paths['root']}/venvs/*/bin/pip 2>/dev/null; ls /var/lib/apt/lists; true",
    ).stdout
    assert out.split() == [], out


def test_the_venv_holds_the_server_the_image_runs_and_not_the_other(image, asgi_server, paths):
    """The other ASGI server and what only it needs are gone (roles/image files/other-server-distributions.py)."""
    other = {"daphne": "uvicorn", "uvicorn": "daphne"}[asgi_server]
    gone = {"daphne": ["daphne", "twisted", "autobahn"], "uvicorn": ["uvicorn", "uvloop", "httptools"]}[other]
    script = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    )
    python = f"{paths['root']}/current/venv/bin/python"
    out = docker("run", "--rm", "--entrypoint", python, image, "-c", script, asgi_server, "django", *gone).stdout
    assert json.loads(out) == {asgi_server: True, "django": True, **dict.fromkeys(gone, False)}


def test_bytecode_is_kept_where_the_servers_import_from_and_nowhere_else(image, asgi_server, paths):
    """Compiled: Django's core and the server; not compiled: a part of Django the app never imports (GIS)."""
    site = f"{paths['root']}/current/venv/lib/python3*/site-packages"
    script = (
        f"for d in {site}/django/db/models {site}/{asgi_server} {site}/django/contrib/gis/gdal; do "
        'set -- "$d"/__pycache__/*.pyc; [ -e "$1" ] && echo compiled || echo source; done'
    )
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script).stdout
    assert out.split() == ["compiled", "compiled", "source"], out


def test_the_translations_the_app_never_loads_are_not_in_the_image(image, paths):
    """The bundled app has USE_I18N = False: Django loads no catalog, so the venv has none (nor their sources); the
    formats of each language (django.conf.locale, a package) stay."""
    site = f"{paths['root']}/current/venv/lib/python3*/site-packages"
    script = f"find {site} -name '*.mo' -o -name '*.po' | wc -l; ls {site}/django/conf/locale/en/formats.py"
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script).stdout.split()
    assert out[0] == "0" and out[1].endswith("/django/conf/locale/en/formats.py"), out


def test_the_packages_test_suites_are_not_in_the_image(image, paths):
    """Test suites shipped inside packages are gone; Django's test framework (django.test) stays importable."""
    site = f"{paths['root']}/current/venv/lib/python3*/site-packages"
    script = (
        f"find {site} /usr/lib/python3/dist-packages -path '*-packages/*/*' -type d \\( -name test -o -name tests \\)"
        f" ! -path '*/site-packages/django/test'; {paths['root']}/current/venv/bin/python -c 'import django.test'"
    )
    result = docker("run", "--rm", "--entrypoint", "sh", image, "-c", script)
    assert result.stdout.split() == [], result.stdout


# --- refusing to start without the secrets ----------------------------------------------------------------


def test_start_without_secret_key_fails_with_a_clear_message(image, redis):
    result = docker("run", "--rm", "-e", f"REDIS_URL={redis}", image, check=False, timeout=60)
    assert result.returncode == 78
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_without_redis_fails_with_a_clear_message(image, app_secrets):
    result = docker(
        "run",
        "--rm",
        *env_args({"DJANGO_SECRET_KEY": app_secrets["DJANGO_SECRET_KEY"]}),
        image,
        check=False,
        timeout=60,
    )
    assert result.returncode == 78
    assert "REDIS_URL is not set" in result.stderr


@pytest.mark.parametrize(("variable", "value"), [("DJANGO_SECRET_KEY", "k" * 49), ("DEPLOY_PUSH_TOKEN", "t" * 31)])
def test_start_with_a_short_secret_fails(image, redis, app_secrets, variable, value):
    env = [f"--env={name}={v}" for name, v in dict(app_secrets, **{variable: value}).items()]
    result = docker("run", "--rm", *env, "-e", f"REDIS_URL={redis}", image, check=False, timeout=60)
    assert result.returncode == 78
    assert f"{variable} is too short" in result.stderr


# --- the running stack ----------------------------------------------------------------------------------------


def test_container_reports_healthy(stack):
    assert inspect(stack["name"], "{{ .State.Health.Status }}") == "healthy"
    print(f"healthy {stack['healthy_after']} s after docker run")


def test_root_page_and_its_static_files_are_served_through_nginx(stack):
    status, body = http_get(stack["url"] + "/")
    assert status == 200
    script = re.search(r'src="(/static/[^"]+\.js)"', body)
    assert script, body[:500]
    status, js = http_get(stack["url"] + script.group(1))  # collectstatic output, served by nginx
    assert status == 200 and "/ws/deploy/" in js


def test_readyz_reaches_the_database_and_redis_for_the_container_itself_only(stack, built):
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    inside = docker("exec", stack["name"], "python3", "-c", fetch, f"http://127.0.0.1:{built['port']}/readyz")
    assert json.loads(inside.stdout)["checks"] == {"database": "ok", "channel_layer": "ok"}
    # From outside the container (a published port): refused, as to any client of the site.
    with pytest.raises(urllib.error.HTTPError) as refused:
        http_get(stack["url"] + "/readyz")
    assert refused.value.code == 403


def test_websocket_round_trip_through_nginx(stack):
    service = "image-" + uuid.uuid4().hex[:8]
    token = grant(stack["name"], service, "--write")
    result = wsprobe("roundtrip", f"{stack['ws']}/ws/deploy/{service}/", "--timeout", "15", "--grant", token)
    assert result.returncode == 0, result.stdout + result.stderr
    frame = json.loads(result.stdout)
    assert frame["type"] == "message" and frame["source"] == "client" and frame["seq"] == 1


def test_manage_push_reaches_a_connected_client(stack, tmp_path, paths):
    service = "image-" + uuid.uuid4().hex[:8]
    message = "pushed " + uuid.uuid4().hex
    ready = tmp_path / "ready"
    token = grant(stack["name"], service)  # the client only listens
    listener = subprocess.Popen(
        [
            "python3",
            str(WSPROBE),
            "listen",
            f"{stack['ws']}/ws/deploy/{service}/",
            "--count",
            "1",
            "--timeout",
            "30",
            "--ready-file",
            str(ready),
            "--grant",
            token,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: ready.exists() or listener.poll() is not None, 15, what="the websocket client")
        assert ready.exists(), listener.communicate(timeout=5)
        manage = f"{paths['app_user']}-manage"  # the app role's wrapper of manage.py
        push = docker("exec", stack["name"], manage, "push", service, message, check=False, timeout=60)
        assert push.returncode == 0, push.stdout + push.stderr
        out, err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate(timeout=5)
    assert listener.returncode == 0, out + err
    frame = json.loads(out.splitlines()[0])
    assert frame["message"] == message and frame["source"] == "push"


def test_http_push_endpoint_uses_the_runtime_token(stack, app_secrets):
    request = urllib.request.Request(
        f"{stack['url']}/api/push/image-http/",
        data=json.dumps({"message": "hi"}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {app_secrets['DEPLOY_PUSH_TOKEN']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def program_of(comm):
    """The program a process name stands for: daphne runs as `python -m devops_toolkit.daphne`."""
    return "daphne" if comm.startswith("python") else comm


def test_only_what_binds_port_80_runs_as_root(stack, asgi_server, paths):
    lines = docker("exec", stack["name"], "ps", "-eo", "user:20,pid,ppid,comm", "--no-headers").stdout.splitlines()
    processes = [line.split() for line in lines]
    by_name = {}
    for user, pid, ppid, comm in processes:
        by_name.setdefault(program_of(comm), []).append((user, int(pid), int(ppid)))
    assert by_name["supervisord"] == [("root", 1, 0)]
    nginx_root = [p for p in by_name["nginx"] if p[0] == "root"]
    assert len(nginx_root) == 1 and nginx_root[0][2] == 1  # the master, child of supervisord
    assert all(user == "www-data" for user, _, ppid in by_name["nginx"] if ppid != 1)
    for program in (asgi_server, "uwsgi"):
        assert by_name.get(program) and all(user == paths["user"] for user, _, _ in by_name[program]), by_name
    assert all(user == "redis" for user, _, _ in by_name.get("redis-server", []))
    root = {comm for user, _, _, comm in processes if user == "root"} - {"ps"}
    assert root == {"supervisord", "nginx"}


def test_the_containers_secrets_reach_the_app_processes_only(stack, asgi_server):
    secrets = {name: value for name, value in stack["env"].items() if name in SECRET_NAMES}
    lines = docker("exec", stack["name"], "ps", "-eo", "pid,ppid,user:20,comm", "--no-headers").stdout.splitlines()
    leaked = {}
    for pid, ppid, user, comm in (line.split(None, 3) for line in lines):
        if pid != "1" and ppid != "1":  # supervisord and what it started (nginx's workers get their master's)
            continue
        # As the process's own user: the container has no CAP_SYS_PTRACE to read another user's environment.
        environ = docker("exec", "--user", user, stack["name"], "cat", f"/proc/{pid}/environ").stdout
        found = {name for name, value in secrets.items() if f"={value}" in environ}
        leaked.setdefault(program_of(comm), set()).update(found)
    # supervisord has the container's environment (docker run -e), and the app's processes get it from there.
    assert leaked["supervisord"] == leaked[asgi_server] == leaked["uwsgi"] == set(secrets), leaked
    assert leaked["nginx"] == leaked.get("redis-server", set()) == set(), leaked


def test_env_file_is_written_at_start_for_the_app_to_read_only(stack, built, paths):
    out = docker("exec", stack["name"], "stat", "-c", "%U %G %a", paths["env_file"]).stdout.split()
    assert out == ["root", paths["app_user"], "640"]
    names = docker("exec", stack["name"], "sed", "-n", "s/=.*//p", paths["env_file"]).stdout.split()
    redis = "REDIS_PASSWORD" if built["bundle_redis"] else "REDIS_URL"
    assert {"DJANGO_SECRET_KEY", redis, "DEPLOY_PUSH_TOKEN"} <= set(names)


def test_socket_dir_is_shared_with_nginx_only(stack, asgi_server, paths):
    out = docker("exec", stack["name"], "stat", "-c", "%U %G %a", paths["run_dir"]).stdout.split()
    assert out == [paths["user"], "www-data", "2750"]
    sockets = docker("exec", stack["name"], "sh", "-c", f"ls {paths['run_dir']}").stdout.split()
    assert f"{asgi_server}-0.sock" in sockets and "uwsgi.sock" in sockets, sockets


# --- push to a registry -----------------------------------------------------------------------------------------


def test_push_to_a_local_registry(built, image, registry):
    result = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "playbooks/image-push.yml",
            "-e",
            f"image_push_registry={registry}",
            "-e",
            f"image_profile={built['profile']}",
            "-e",
            f"image_result_file={RESULT_FILE}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ansible_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    repository, tag = image.rsplit(":", 1)
    _, tags = http_get(f"http://{registry}/v2/{repository}/tags/list")
    assert tag in json.loads(tags)["tags"]
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.loads(response.read())
    assert manifest["config"]["digest"] == built["id"]  # the very image that was built
    # The registry tag was only for the push.
    assert docker("image", "inspect", f"{registry}/{image}", check=False).returncode != 0


# --- last: the graceful stop ---------------------------------------------------------------------------------------


def test_docker_stop_is_graceful(stack, built, asgi_server):
    name = stack["name"]
    # The ASGI processes: group <server> (the asgi role's program name), processes <server>-0 .. -N-1.
    servers = int(docker("exec", name, "sh", "-c", f"supervisorctl status | grep -c '^{asgi_server}:'").stdout)
    assert servers >= 1
    started = time.monotonic()
    docker("stop", name, timeout=stack["stop_timeout"] + 30)
    elapsed = time.monotonic() - started
    print(f"docker stop took {elapsed:.1f} s (stop timeout {stack['stop_timeout']} s)")
    assert elapsed < stack["stop_timeout"]
    assert inspect(name, "{{ .State.ExitCode }}") == "0"
    log = docker("logs", name).stdout + docker("logs", name).stderr
    assert "received SIGTERM indicating exit request" in log
    assert "SIGKILL" not in log
    stopped = dict(re.findall(r"stopped: (\S+) \((exit status \d+|terminated by \w+)\)", log))
    expected = (
        {"nginx", "uwsgi"}
        | {f"{asgi_server}-{n}" for n in range(servers)}
        | ({"redis"} if built["bundle_redis"] else set())
    )
    assert set(stopped) == expected, stopped
    assert all(how in ("exit status 0", "terminated by SIGTERM") for how in stopped.values()), stopped
