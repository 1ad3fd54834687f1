"""A user's own project: the fixture tests/projects/chat (tutorial-style settings, an asgi.py that imports its
routing before Django is set up, no health view, no server in its requirements), deployed unmodified next to the
bundled app with the README's command, `ansible-playbook playbooks/site.yml -e @tests/projects/chat.yml`.

Runs from the controller against the default scenario's bookworm host (once, not per host).
"""

import json
import os
import shutil
import time
import uuid

import pytest
import testinfra
from helpers import PROJECT, frames, http_get, playbook, recap

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default", reason="runs once, in the default scenario"
)

HOST = "devops-molecule-bookworm"
VARIABLES = os.path.join(PROJECT, "tests", "projects", "chat.yml")
FIXTURE = os.path.join(PROJECT, "tests", "projects", "chat")
SITE = "chat.localhost"
ROOT, RUN_DIR, DATA_DIR = "/srv/chat", "/run/chat", "/var/lib/chat"


@pytest.fixture(scope="module")
def chat():
    return testinfra.get_host(f"ansible://{HOST}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="module")
def deployed(chat):
    """Two runs of site.yml with the project's variables file: (seconds, recap) of each."""
    runs = []
    for _ in range(2):
        started = time.monotonic()
        result = playbook("site.yml", HOST, "-e", f"@{VARIABLES}")
        runs.append((round(time.monotonic() - started), recap(result.stdout, HOST)))
    print(f"\nchat fixture: first run {runs[0][0]} s {runs[0][1]}, second run {runs[1][0]} s {runs[1][1]}")
    return runs


def get(chat, path, host_header=SITE):
    script = (
        "import http.client, sys; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=10); "
        "c.request('GET', sys.argv[1], headers={'Host': sys.argv[2]}); r = c.getresponse(); "
        "print(r.status); print(r.read().decode())"
    )
    status, _, body = chat.check_output("python3 -c %s %s %s", script, path, host_header).partition("\n")
    return int(status), body


def programs(chat):
    """{process: state} of the project's processes (chat-daphne:chat-daphne-N, chat-uwsgi)."""
    lines = [line.split() for line in chat.check_output("supervisorctl status").splitlines()]
    return {name: state for name, state, *_ in lines if name.startswith("chat-")}


def pids(chat):
    return {name: chat.check_output("supervisorctl pid %s", name) for name in programs(chat)}


# --- one run, then nothing to change ---------------------------------------------------------------------------


def test_one_run_deploys_it_and_a_second_run_changes_nothing(deployed):
    (_, first), (_, second) = deployed
    assert first["failed"] == 0 and first["changed"] > 0
    assert second["changed"] == 0, second


def test_the_servers_come_from_the_toolkit(chat, deployed):
    requirements = open(os.path.join(FIXTURE, "requirements.txt")).read().lower()
    assert "daphne" not in requirements and "uwsgi" not in requirements
    for executable in ("daphne", "uwsgi"):
        assert chat.file(f"{ROOT}/current/venv/bin/{executable}").exists, executable
    assert chat.run(f"{ROOT}/current/venv/bin/python -m pip check").rc == 0


# --- served through nginx ---------------------------------------------------------------------------------------


def test_page_and_static_files(chat, deployed):
    status, body = get(chat, "/")
    assert status == 200 and "/static/chat/style.css" in body
    status, css = get(chat, "/static/chat/style.css")
    assert status == 200 and css.startswith("/* chat fixture stylesheet */")


def test_the_toolkit_answers_the_health_path(chat, deployed):
    assert get(chat, "/healthz") == (200, "ok")
    for n in range(2):
        status, _, body = http_get(chat, "/healthz", unix=f"{RUN_DIR}/chat-daphne-{n}.sock")
        assert (status, body) == (200, "ok\n")


def test_websocket_round_trip_between_clients_on_different_processes(chat, deployed):
    """A listener on process 0, a sender on process 1: the message crosses the channel layer (Redis)."""
    room = "r" + uuid.uuid4().hex[:10]
    url = f"ws://{SITE}/ws/chat/{room}/"
    script = f"""
set -e
cd /tmp
ready=$(mktemp -u)
/usr/local/bin/wsprobe listen {url} --unix {RUN_DIR}/chat-daphne-0.sock --count 1 --ready-file $ready \
  --timeout 20 > /tmp/{room}.out &
for i in $(seq 100); do [ -e $ready ] && break; sleep 0.1; done
/usr/local/bin/wsprobe send {url} hello-{room} --unix {RUN_DIR}/chat-daphne-1.sock >/dev/null
wait
cat /tmp/{room}.out
"""
    received = frames(chat.check_output("bash -c %s", script))
    assert received == [{"message": f"hello-{room}", "user": "anonymous"}]
    count = chat.check_output(
        "chat-manage shell -c %s",
        f"from chat.models import Message; print(Message.objects.filter(room='{room}').count())",
    )
    assert count.strip() == "1"


def test_the_database_is_in_the_data_directory_not_beside_the_code(chat, deployed):
    assert chat.file(f"{DATA_DIR}/db.sqlite3").exists
    assert not chat.file(f"{ROOT}/current/src/db.sqlite3").exists


def test_admin_login_post_through_nginx_passes_csrf(chat, deployed):
    """Through a published port (Host with a port): the login POST is accepted with its token, refused without."""
    password = uuid.uuid4().hex
    chat.run(
        "DJANGO_SUPERUSER_PASSWORD=%s chat-manage createsuperuser --noinput --username admin --email a@example.org",
        password,
    )
    script = r"""
import http.client, re, sys, urllib.parse
host, password, with_token = "chat.localhost:8080", sys.argv[1], sys.argv[2] == "yes"
c = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
c.request("GET", "/admin/login/", headers={"Host": host})
r = c.getresponse(); page = r.read().decode()
cookie = re.search(r"csrftoken=([^;]+)", r.getheader("Set-Cookie")).group(1)
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
form = {"username": "admin", "password": password, "next": "/admin/"}
if with_token:
    form["csrfmiddlewaretoken"] = token
c.request("POST", "/admin/login/", body=urllib.parse.urlencode(form), headers={
    "Host": host, "Origin": "http://" + host, "Referer": "http://" + host + "/admin/login/",
    "Cookie": "csrftoken=" + cookie, "Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse(); r.read()
print(r.status, r.getheader("Location"))
"""
    assert chat.check_output("python3 -c %s %s yes", script, password) == "302 /admin/"
    assert chat.check_output("python3 -c %s %s no", script, password).startswith("403")


# --- next to the bundled app ------------------------------------------------------------------------------------


def test_two_projects_share_the_host_without_sharing_state(chat, deployed):
    status, body = get(chat, "/", "localhost")
    assert status == 200 and "/static/deploy/deploy.js" in body
    states = {line.split()[0]: line.split()[1] for line in chat.check_output("supervisorctl status").splitlines()}
    ours = programs(chat)
    assert set(ours) == {"chat-daphne:chat-daphne-0", "chat-daphne:chat-daphne-1", "chat-uwsgi"}
    assert set(ours.values()) == {"RUNNING"}
    assert states.get("uwsgi") == "RUNNING" and states.get("daphne:daphne-0") == "RUNNING"
    chat_env = chat.file("/etc/chat/chat.env").content_string
    bundled_env = chat.file("/etc/devops/devops.env").content_string
    assert "CHANNELS_PREFIX=chat" in chat_env and "CHANNELS_PREFIX=devops" in bundled_env
    assert "DEPLOY_PUSH_TOKEN" not in chat_env
    release_env = chat.file(f"{ROOT}/current/toolkit/release.env").content_string
    assert "DJANGO_SETTINGS_MODULE=devops_toolkit.settings" in release_env
    assert "DEVOPS_PROJECT_SETTINGS=mysite.settings" in release_env
    assert chat.file("/etc/nginx/sites-enabled/chat.conf").exists


# --- what keeps a bad release out -------------------------------------------------------------------------------


def test_the_entry_point_sets_django_up_before_the_projects_asgi_module(chat, deployed):
    """Without it the project's asgi.py fails under any ASGI server; the processes import it through it."""
    run = f"runuser -u chat -- {ROOT}/bin/run {ROOT}/current/venv/bin/python -c"
    plain = chat.run(f"{run} 'import mysite.asgi'")
    assert plain.rc != 0 and "AppRegistryNotReady" in plain.stderr
    assert chat.run(f"{run} 'import devops_toolkit.asgi'").rc == 0


def test_a_release_that_does_not_import_never_becomes_current(chat, deployed, tmp_path):
    broken = tmp_path / "chat"
    shutil.copytree(FIXTURE, broken, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
    asgi = broken / "mysite" / "asgi.py"
    asgi.write_text(asgi.read_text().replace("import chat.routing", "import chat.routing\nimport chat.no_such_module"))
    current = chat.check_output("readlink %s/current", ROOT)
    before = pids(chat)

    result = playbook("deploy.yml", HOST, "-e", f"@{VARIABLES}", "-e", f"app_source_dir={broken}", check=False)

    assert result.returncode != 0
    assert "No module named 'chat.no_such_module'" in result.stdout + result.stderr
    assert chat.check_output("readlink %s/current", ROOT) == current
    assert pids(chat) == before
    assert get(chat, "/")[0] == 200
    roundtrip = chat.run(f"/usr/local/bin/wsprobe roundtrip ws://127.0.0.1/ws/chat/after/ --host {SITE}")
    assert roundtrip.rc == 0, roundtrip.stdout
    # Unguarded, the processes would have started on it and failed: the release does not import.
    release = chat.check_output("ls -td %s/releases/*/ | head -1", ROOT).rstrip("/")
    unguarded = chat.run(
        f"DEVOPS_RELEASE={release} runuser -u chat -- {ROOT}/bin/run {release}/venv/bin/python -c "
        "'import devops_toolkit.asgi'"
    )
    assert unguarded.rc != 0 and "chat.no_such_module" in unguarded.stderr


def test_a_restart_a_failed_run_left_undone_happens_on_the_next_run(chat, deployed):
    """A run that failed after `current` moved never restarted the processes: the next run does."""
    records = {name: f"{ROOT}/{name}.release" for name in ("chat-daphne", "chat-uwsgi")}
    recorded = {name: chat.check_output("cat %s", path) for name, path in records.items()}
    before = pids(chat)
    # A run that changes nothing leaves the processes alone...
    playbook("deploy.yml", HOST, "-e", f"@{VARIABLES}")
    assert pids(chat) == before
    # ...and one that finds them started with another release (daphne) or venv (uwsgi) restarts them.
    release, venv = recorded["chat-daphne"].split()
    chat.check_output("echo %s > %s", f"{ROOT}/releases/older {venv}", records["chat-daphne"])
    chat.check_output("echo %s > %s", f"{release} {ROOT}/venvs/older", records["chat-uwsgi"])
    output = playbook("deploy.yml", HOST, "-e", f"@{VARIABLES}").stdout
    after = pids(chat)
    assert all(after[name] != before[name] for name in before), output[-3000:]
    assert {name: chat.check_output("cat %s", path) for name, path in records.items()} == recorded


def test_a_run_that_fails_after_changing_the_env_file_still_restarts_the_processes(chat, deployed):
    """The restarts a run notified happen even when a later task fails (force_handlers in ansible.cfg): the next run
    finds the env file unchanged and would never restart the processes, which would keep the old environment."""

    def environments():
        return {
            name: chat.check_output("tr '\\0' '\\n' < /proc/%s/environ | grep ^CHAT_RUN_MARK= || true", pid)
            for name, pid in pids(chat).items()
        }

    def failing_run(mark, *env):
        # The env file changes (app role), then the uwsgi role refuses its variables, before any handler ran.
        extra = json.dumps({"app_extra_env": {"CHAT_RUN_MARK": mark}, "uwsgi_buffer_size": 1000})
        result = playbook("deploy.yml", HOST, "-e", f"@{VARIABLES}", "-e", extra, check=False, env=dict(env))
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "buffer_size 4096-65535" in output, output[-3000:]
        assert f"CHAT_RUN_MARK={mark}" in chat.check_output("cat %s", "/etc/chat/chat.env")

    try:
        # Without forced handlers: the processes keep the old environment, and nothing would ever restart them.
        before = pids(chat)
        failing_run("unforced", ("ANSIBLE_FORCE_HANDLERS", "false"))
        assert pids(chat) == before
        assert set(environments().values()) == {""}
        # As configured: the same failure, and every process runs with the new env file.
        failing_run("forced")
        assert set(environments().values()) == {"CHAT_RUN_MARK=forced"}
    finally:
        # Back to the project's own environment, for the tests that follow.
        playbook("deploy.yml", HOST, "-e", f"@{VARIABLES}")
    assert set(environments().values()) == {""}
