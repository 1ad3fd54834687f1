"""A converge with an invalid variable fails at validation and changes nothing on a converged host.

Runs ansible-playbook from the controller against molecule's inventory (one host is enough).
"""

import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default", reason="runs once, in the default scenario"
)

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ("redis_port=70000", "redis_port"),
        ("app_profile=ancient", "app_profile"),
        ("redis_password=''", "redis_password"),
        ("asgi_processes=0", "asgi_processes"),
        ("asgi_server=gunicorn", "asgi_server"),
        ("nginx_listen_port=0", "nginx_listen_port"),
        ("app_secret_key=" + "k" * 49, "app_secret_key needs >= 50"),
        ("app_push_token=" + "t" * 31, "app_push_token"),
        ('{"app_client_write_services": ["smoke", "bad name"]}', "each of app_client_write_services"),
    ],
)
def test_invalid_value_fails_before_any_change(extra_vars, message):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            inventory,
            "--limit",
            "devops-molecule-bookworm",
            os.path.join(PROJECT, "playbooks", "site.yml"),
            "-e",
            extra_vars,
        ],
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output
    recap = re.search(r"devops-molecule-bookworm\s*:\s*ok=\d+\s+changed=(\d+).*failed=(\d+)", output)
    assert recap, output
    assert recap.group(1) == "0" and recap.group(2) == "1", recap.group(0)
