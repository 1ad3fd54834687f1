"""Helpers of the stack's testinfra checks (they run inside each converged host)."""

import json
import os
import subprocess

WS = "ws://localhost/ws/deploy/{service}/"
PROBE = "/usr/local/bin/wsprobe"
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))

# What the checks need to know of a host, asked from Ansible with the host's own inventory values, so that a host
# with another project name, user or ASGI server is checked against its own layout.
LAYOUT_VARIABLES = {
    "project": "devops_project",
    "user": "devops_user",
    "root": "devops_root",
    "run_dir": "devops_run_dir",
    "log_dir": "devops_log_dir",
    "env_file": "devops_env_file",
    "server": "asgi_server | default('daphne')",
    "program": "asgi_program_prefix ~ asgi_server | default('daphne')",
    "uwsgi_program": "uwsgi_program_name",
    "profile": "app_profile | default('modern')",
    "layer": "app_channel_layer | default('redis-pubsub')",
    "max_message": "app_max_message_bytes | default(65536)",
    "log_max_bytes": "devops_log_max_bytes",
    "log_backups": "devops_log_backups",
    "access_log_format": "devops_access_log_format | default('text')",
    "send_buffer_limit": "asgi_send_buffer_limit_bytes | default(0)",
    "channel_capacity": "app_channel_capacity | default(100)",
}


def read_layout(host):
    """The host's layout contract and ASGI server, templated by Ansible (inventory and group_vars)."""
    expression = ", ".join(f"{key!r}: {value}" for key, value in LAYOUT_VARIABLES.items())
    result = host.ansible("ansible.builtin.debug", "msg={{ {" + expression + "} | to_json }}", check=False)
    return json.loads(result["msg"]) if isinstance(result["msg"], str) else result["msg"]


def frames(output):
    """The JSON frames a wsprobe run printed, one per line."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def http_get(host, path, unix=None, headers=None):
    """GET through nginx (or a unix socket) from inside the host, with extra `headers`; returns (status, headers,
    body)."""
    script = r"""
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(10); self.sock.connect(sys.argv[2])
conn = Unix("localhost") if sys.argv[2] else http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
conn.request("GET", sys.argv[1], headers={"Host": "localhost", **json.loads(sys.argv[3])})
r = conn.getresponse()
print(json.dumps({"status": r.status, "headers": dict(r.getheaders()), "body": r.read().decode(errors="replace")}))
"""
    out = host.check_output("python3 -c %s %s %s %s", script, path, unix or "", json.dumps(headers or {}))
    data = json.loads(out)
    return data["status"], data["headers"], data["body"]


def uwsgi_requests(host, stats_socket):
    """Total requests served by uwsgi's workers, read from its stats socket."""
    script = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(sum(w["requests"] for w in json.loads(data)["workers"]))
"""
    return int(host.check_output("python3 -c %s %s", script, stats_socket))


def playbook(name, host, *extra, check=True, env=None):
    """Run playbooks/<name> from the controller against molecule's inventory, limited to `host`, from the
    repository (as the README does), with `env` added to the environment; returns the completed process."""
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit",
            host,
            os.path.join(PROJECT, "playbooks", name),
            *extra,
        ],
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT,
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


def recap(output, host):
    """{"ok": n, "changed": n, ...} from the PLAY RECAP line of `host`."""
    line = next(line for line in output.splitlines() if line.startswith(host + " ") and "changed=" in line)
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def listen_and_push(host, layout, service, grant, *refused_commands):
    """A client with `grant` listens to `service` while each of `refused_commands` runs, then a push is made: returns
    (the refused commands' results, the frames the listener printed)."""
    manage = f"{layout['project']}-manage"
    ready, out = f"/tmp/{service}.ready", f"/tmp/{service}.out"
    host.check_output(
        "sh -c %s",
        f"WSPROBE_GRANT={grant} {PROBE} listen {WS.format(service=service)} --count 1 --timeout 60 "
        f"--ready-file {ready} > {out} 2>&1 &",
    )
    host.check_output("sh -c %s", f"for i in $(seq 100); do [ -e {ready} ] && exit 0; sleep 0.1; done; exit 1")
    results = [host.run(command) for command in refused_commands]
    host.check_output("%s push %s %s", manage, service, "served")
    host.check_output("sh -c %s", f"for i in $(seq 100); do grep -q served {out} && exit 0; sleep 0.1; done; exit 1")
    return results, frames(host.file(out).content_string)


def grant_for(host, layout, pattern, *options):
    """A grant from the host's app: `options` are manage.py grant's (--write, --seconds N)."""
    return host.check_output(" ".join([f"{layout['project']}-manage grant %s", *options]), pattern)
