"""What roles/app puts in front of a user's project (files/devops_toolkit, files/install-servers), run against the
fixture project tests/projects/chat with the app's test venv (Django, channels, channels-redis).

Each check runs in a fresh Python process, as the deployed processes do: the overlay and the entry points act at
import time.
"""

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "roles" / "app" / "files"
FIXTURE = REPO / "tests" / "projects" / "chat"
SECRET = "s" * 50


def run(code, tmp_path, toolkit=FILES, **env):
    """Run `code` in the fixture project's directory with the toolkit importable and a production environment."""
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(toolkit),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "devops_toolkit.settings",
        "DEVOPS_PROJECT_SETTINGS": "mysite.settings",
        "DJANGO_SECRET_KEY": SECRET,
        "DJANGO_ALLOWED_HOSTS": "chat.example.org",
        "DJANGO_DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "CHANNEL_LAYER": "redis",
        "REDIS_HOST": "redis.internal",
        "REDIS_PASSWORD": "p@ss:/word",
        "CHANNELS_PREFIX": "chat",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=FIXTURE, env=environ, capture_output=True, text=True, timeout=60
    )


SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({"debug": s.DEBUG, "secret": s.SECRET_KEY, "hosts": s.ALLOWED_HOSTS, "db": s.DATABASES["default"],
    "static": s.STATIC_ROOT, "layer": s.CHANNEL_LAYERS["default"], "apps": s.INSTALLED_APPS,
    "origins": s.CSRF_TRUSTED_ORIGINS, "proxy": getattr(s, "SECURE_PROXY_SSL_HEADER", None)}))
"""


def test_the_overlay_keeps_the_project_and_sets_production(tmp_path):
    result = run(SETTINGS, tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["debug"] is False and settings["secret"] == SECRET
    assert settings["hosts"] == ["chat.example.org"]
    assert settings["db"]["NAME"] == str(tmp_path / "data" / "db.sqlite3")
    assert settings["static"] == str(tmp_path / "static")
    assert settings["layer"] == {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": ["redis://:p%40ss%3A%2Fword@redis.internal:6379/0"],
            "prefix": "chat",
            "group_expiry": 86400,
            "capacity": 100,
        },
    }
    assert "chat" in settings["apps"] and "django.contrib.admin" in settings["apps"]
    assert settings["proxy"] is None


PUBSUB_HOSTS = """
import django
django.setup()
from django.conf import settings
[host] = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
print(settings.CHANNEL_LAYERS["default"]["BACKEND"], host["address"], [e.__module__ for e in host["retry_on_error"]])
"""


def test_the_overlays_pubsub_layer_reconnects_a_closed_connection(tmp_path):
    # devops.env.pubsub_layer_pool_options, the bundled app's: app/deploy/tests/test_pubsub_reconnect.py
    result = run(PUBSUB_HOSTS, tmp_path, CHANNEL_LAYER="redis-pubsub")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(maxsplit=2) == [
        "channels_redis.pubsub.RedisPubSubChannelLayer",
        "redis://:p%40ss%3A%2Fword@redis.internal:6379/0",
        "['redis.exceptions']",
    ]


def test_the_overlay_logs_in_as_the_projects_redis_user(tmp_path):
    result = run(SETTINGS, tmp_path, REDIS_USERNAME="chat")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layer"]["CONFIG"]["hosts"] == [
        "redis://chat:p%40ss%3A%2Fword@redis.internal:6379/0"
    ]


def test_the_overlay_behind_tls_trusts_the_proxy_header(tmp_path):
    result = run(SETTINGS, tmp_path, DJANGO_HTTPS="true", DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.org")
    settings = json.loads(result.stdout)
    assert settings["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert settings["origins"] == ["https://chat.example.org"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"CHANNEL_LAYER": "rabbit"}, "CHANNEL_LAYER"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ],
)
def test_the_overlay_refuses_bad_values(tmp_path, env, message):
    result = run(SETTINGS, tmp_path, **env)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and message in result.stderr


ASGI = """
import asyncio, sys
from {module} import application
async def get(path):
    sent, requests = [], [{{"type": "http.request", "body": b"", "more_body": False}}]
    async def receive():
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays connected
    async def send(message):
        sent.append(message)
    scope = {{"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"chat.example.org")], "scheme": "http", "server": ("x", 80), "client": ("y", 1),
             "asgi": {{"version": "3.0"}}, "http_version": "1.1", "root_path": ""}}
    await application(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
print(asyncio.run(get(sys.argv[1] if len(sys.argv) > 1 else "/healthz")))
"""


def test_the_entry_point_sets_django_up_before_the_projects_asgi_module(tmp_path):
    plain = run("import mysite.asgi", tmp_path)
    assert plain.returncode != 0 and "AppRegistryNotReady" in plain.stderr
    through = run(ASGI.format(module="devops_toolkit.asgi"), tmp_path, DEVOPS_HEALTH_PATH="/healthz")
    assert through.returncode == 0, through.stderr
    assert through.stdout.strip() == "(200, b'ok\\n')"


def test_without_a_health_path_the_project_answers_it(tmp_path):
    result = run(ASGI.format(module="devops_toolkit.asgi"), tmp_path, DEVOPS_HEALTH_PATH="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(404,")


def test_the_gate_passes_a_good_release_and_names_what_does_not_import(tmp_path):
    good = run("import runpy; runpy.run_module('devops_toolkit.check', run_name='__main__')", tmp_path)
    assert good.returncode == 0, good.stderr
    assert "ASGI application (the ASGI_APPLICATION setting) imports" in good.stdout
    assert "channel layer channels_redis.core.RedisChannelLayer builds" in good.stdout
    bad = run(
        "import runpy; runpy.run_module('devops_toolkit.check', run_name='__main__')",
        tmp_path,
        DEVOPS_ASGI_APPLICATION="chat.no_such_module:application",
    )
    assert bad.returncode == 1
    assert "No module named 'chat.no_such_module'" in bad.stderr


def test_the_package_reads_its_release_environment_again(tmp_path):
    """A chain-reloaded uwsgi worker inherits the old master's environment; importing the package corrects it."""
    toolkit = tmp_path / "release" / "toolkit"
    shutil.copytree(FILES / "devops_toolkit", toolkit / "devops_toolkit")
    (toolkit / "release.env").write_text("DEVOPS_WSGI_APPLICATION='mysite.wsgi:application'\nDEVOPS_HEALTH_PATH=''\n")
    code = (
        "import os, devops_toolkit; "
        "print(os.environ['DEVOPS_WSGI_APPLICATION'], repr(os.environ['DEVOPS_HEALTH_PATH']))"
    )
    result = run(code, tmp_path, toolkit=toolkit, DEVOPS_WSGI_APPLICATION="old.wsgi:application")
    assert result.stdout.split() == ["mysite.wsgi:application", "''"]


def load_install_servers():
    loader = importlib.machinery.SourceFileLoader("install_servers", str(FILES / "install-servers"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_server_lists_pin_every_entry_with_hashes_for_this_python():
    install_servers = load_install_servers()
    for name in ("daphne", "uvicorn", "pyuwsgi"):
        entries = dict(install_servers.entries(FILES / "servers" / f"{name}.txt"))
        assert name in entries, name
        assert all("==" in line and "--hash=sha256:" in line for line in entries.values()), name
    # Markers that do not hold here are left out (websockets is pinned twice, by Python version).
    versions = [
        line for name, line in install_servers.entries(FILES / "servers" / "uvicorn.txt") if name == "websockets"
    ]
    assert len(versions) == 1


PUBSUB_CAPACITY = """
import devops_toolkit.asgi
from channels_redis.pubsub import RedisPubSubLoopLayer
print(RedisPubSubLoopLayer.devops_capacity)
"""


def test_the_entry_point_gives_the_pubsub_layer_the_channel_capacity(tmp_path):
    result = run(PUBSUB_CAPACITY, tmp_path, CHANNELS_CAPACITY="40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["40"]
    refused = run(PUBSUB_CAPACITY, tmp_path, CHANNELS_CAPACITY="0")
    assert refused.returncode != 0
    assert "CHANNELS_CAPACITY='0' must be a whole number, at least 1" in refused.stderr


DAPHNE_JSON_LOG = """
import io, json, sys
from daphne.access import AccessLogGenerator
from devops_toolkit import daphne
AccessLogGenerator.write_entry = daphne.write_entry  # what --access-log-format json does
stream = io.StringIO()
log = AccessLogGenerator(stream)
log("http", "complete", {"client": "10.0.0.7:51234", "method": "GET", "path": "/healthz", "status": 200, "size": 15})
log("websocket", "connected", {"client": "10.0.0.7:51235", "path": "/ws/deploy/tasks/"})
print(stream.getvalue(), end="")
"""


def test_the_daphne_module_writes_daphnes_access_log_entries_as_json_lines(tmp_path):
    result = run(DAPHNE_JSON_LOG, tmp_path)
    assert result.returncode == 0, result.stderr
    http, websocket = (json.loads(line) for line in result.stdout.splitlines())
    assert datetime.fromisoformat(http.pop("time")).tzinfo is not None
    assert http == {"client": "10.0.0.7:51234", "action": "GET", "path": "/healthz", "status": 200, "bytes": 15}
    assert websocket["action"] == "WSCONNECT" and websocket["path"] == "/ws/deploy/tasks/"
    assert websocket["status"] is None


def test_the_daphne_module_runs_daphnes_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "devops_toolkit.daphne", "--help"],
        env={**os.environ, "PYTHONPATH": str(FILES)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--access-log" in result.stdout
