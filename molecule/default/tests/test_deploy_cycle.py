"""deploy.yml and rollback against a converged host: a changed release goes live without a restart of uwsgi's
master (chain reload) and with daphne restarted one process at a time; rollback brings the old one back.

Runs ansible-playbook from the controller against molecule's inventory, on one host of the default scenario.
"""

import os
import shutil
import time
import uuid

import pytest
import testinfra
from helpers import PROJECT, playbook, read_layout

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default", reason="runs once, in the default scenario"
)

HOST = "devops-molecule-bookworm"


def deploy(*extra):
    return playbook("deploy.yml", HOST, *extra).stdout


def index(host):
    script = (
        "import http.client; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=10); "
        "c.request('GET', '/', headers={'Host': 'localhost'}); r = c.getresponse(); "
        "print(r.status); print(r.read().decode())"
    )
    status, _, body = host.check_output("python3 -c %s", script).partition("\n")
    assert status == "200"
    return body


def roundtrip(host, service):
    """A websocket round trip through nginx with a grant for the service that may send."""
    grant = host.check_output("devops-manage grant %s --write", service)
    return host.run(f"WSPROBE_GRANT={grant} /usr/local/bin/wsprobe roundtrip ws://localhost/ws/deploy/{service}/")


def wait_for_index(host, present, marker, seconds=60):
    """uwsgi's master notices the touched reload file on its next cycle, then replaces workers one by one."""
    deadline = time.monotonic() + seconds
    while (marker in index(host)) != present:
        assert time.monotonic() < deadline, f"marker {'not ' if present else ''}served after {seconds}s"
        time.sleep(1)


def test_deploy_then_rollback(tmp_path):
    host = testinfra.get_host(f"ansible://{HOST}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")
    marker = f"release-marker-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "app"
    shutil.copytree(os.path.join(PROJECT, "app"), source, ignore=shutil.ignore_patterns("__pycache__", "var"))
    template = source / "deploy" / "templates" / "deploy" / "index.html"
    template.write_text(template.read_text() + f"\n<!-- {marker} -->\n")

    current = read_layout(host)["root"] + "/current"
    before = host.check_output("readlink %s", current)
    uwsgi = read_layout(host)["uwsgi_program"]
    uwsgi_master = host.check_output("supervisorctl pid %s", uwsgi)
    # A copy of the bundled app is a project that reads its own environment: no overlay, its own health view and
    # requirements file, and the push token it reads passed as an extra variable.
    variables = tmp_path / "vars.yml"
    variables.write_text(
        "app_source_type: dir\n"
        f"app_source_dir: {source}\n"
        "app_settings_overlay: false\n"
        "app_health_served: project\n"
        "app_requirements_file: requirements/{{ app_profile }}.txt\n"
        # The bundled app's settings (and the servers' message limit) as the bundled source gets them: the env file
        # and the programs stay the same.
        'asgi_websocket_max_message_bytes: "{{ app_max_message_bytes | int + 1024 }}"\n'
        "app_extra_env: >-\n"
        "  {{ {'DEPLOY_CLIENT_WRITE_SERVICES': app_client_write_services | join(','),\n"
        "      'DEPLOY_GRANT_SECONDS': app_grant_seconds, 'DEPLOY_MAX_MESSAGE_BYTES': app_max_message_bytes,\n"
        "      'DEPLOY_PUSH_TOKEN': app_push_token, 'DEPLOY_WEBSOCKET_ACCESS': app_websocket_access,\n"
        "      'PROMETHEUS_MULTIPROC_DIR': app_run_dir ~ '/metrics'}\n"
        "     | combine({'DEPLOY_HISTORY_LENGTH': app_history_length,\n"
        "                'DEPLOY_HISTORY_REPLICAS': app_history_replicas} if app_profile == 'modern' else {}) }}\n"
    )
    deploy("-e", f"@{variables}")
    after = host.check_output("readlink %s", current)
    assert after != before
    wait_for_index(host, True, marker)
    assert host.check_output("supervisorctl pid %s", uwsgi) == uwsgi_master, "uwsgi was restarted, not chain-reloaded"
    assert roundtrip(host, "t-after-deploy").rc == 0

    output = deploy("-e", "app_rollback=true")
    assert host.check_output("readlink %s", current) == before, output[-3000:]
    wait_for_index(host, False, marker)
    assert roundtrip(host, "t-after-rollback").rc == 0
