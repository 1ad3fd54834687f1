"""Ansible runs, read through the JSON stdout callback (ansible.posix.json) rather than from the text output.

One document per run: per host the recap counts (`stats`), and per task its name, start and end and each host's
result. From it: the changed count, the task count, the tasks that changed and the slowest tasks.
"""

import json
import os
import sys
import time
from datetime import datetime

from .common import INVENTORY, LOGS, ROOT, STACK, sh

# ANSIBLE_LOAD_CALLBACK_PLUGINS: ad-hoc `ansible` ignores the stdout callback setting without it.
JSON_CALLBACK = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}


def parse(stdout):
    """The JSON document in the callback's output (anything Ansible printed before it is skipped)."""
    start = 0 if stdout.startswith("{") else stdout.find("\n{") + 1
    if start == 0 and not stdout.startswith("{"):
        raise ValueError("no JSON document in Ansible's output")
    document, _ = json.JSONDecoder().raw_decode(stdout[start:])
    return document


def _seconds(duration):
    if "start" not in duration or "end" not in duration:
        return 0.0
    start, end = (datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
    return (end - start).total_seconds()


class Recap:
    """What one ansible(-playbook) run did, from the callback's document."""

    def __init__(self, document):
        self.document = document

    def stats(self, host):
        return self.document.get("stats", {}).get(host, {})

    def changed(self, host):
        """The recap's changed= for the host (None when the host did not run)."""
        return self.stats(host).get("changed")

    def tasks(self, host):
        """Every task (and handler) that reported a result for the host, in order."""
        rows = []
        for play in self.document.get("plays", []):
            for task in play.get("tasks", []):
                result = task.get("hosts", {}).get(host)
                if result is None:
                    continue
                rows.append(
                    {
                        "name": task["task"]["name"],
                        "seconds": _seconds(task["task"].get("duration", {})),
                        "changed": bool(result.get("changed")),
                        "skipped": bool(result.get("skipped")),
                        "failed": bool(result.get("failed") or result.get("unreachable")),
                        "msg": result.get("msg", ""),
                    }
                )
        return rows

    def task_count(self, host):
        """(tasks with a result for the host, of which skipped)."""
        tasks = self.tasks(host)
        return len(tasks), sum(t["skipped"] for t in tasks)

    def changed_tasks(self, host):
        return [t["name"] for t in self.tasks(host) if t["changed"]]

    def slowest(self, host, count=5):
        """The `count` longest tasks as [name, seconds], longest first."""
        tasks = sorted(self.tasks(host), key=lambda t: t["seconds"], reverse=True)[:count]
        return [[t["name"], round(t["seconds"], 1)] for t in tasks]

    def failures(self):
        """'host: task: message' for each failed result (ignored failures included)."""
        return [
            f"{host}: {task['task']['name']}: {str(result.get('msg', ''))[:300]}"
            for play in self.document.get("plays", [])
            for task in play.get("tasks", [])
            for host, result in task.get("hosts", {}).items()
            if result.get("failed") or result.get("unreachable")
        ]


def playbook(path, *, log_name, inventory=None, extra=None):
    """ansible-playbook PATH; returns (seconds, returncode, Recap or None, stderr). The callback's document and
    Ansible's stderr are kept in .cache/bench/<log_name>.json and .stderr (the last run of each kind)."""
    argv = ["ansible-playbook", *(["-i", str(inventory)] if inventory else []), str(path)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    started = time.monotonic()
    result = sh(*argv, cwd=ROOT, check=False, env={**os.environ, **JSON_CALLBACK})
    seconds = time.monotonic() - started
    (LOGS / f"{log_name}.json").write_text(result.stdout)
    (LOGS / f"{log_name}.stderr").write_text(result.stderr)  # warnings, and errors before the first play
    try:
        recap = Recap(parse(result.stdout))
    except ValueError:
        recap = None
    return seconds, result.returncode, recap, result.stderr


def converge(extra=None):
    """site.yml on bench-stack; returns (seconds, Recap). Stops the suite when it fails."""
    seconds, returncode, recap, stderr = playbook(
        ROOT / "playbooks" / "site.yml", log_name="converge", inventory=INVENTORY, extra=extra
    )
    if returncode != 0 or recap is None or recap.changed(STACK) is None:
        failures = "\n".join(recap.failures()) if recap else ""
        sys.exit(f"site.yml failed (exit {returncode}; .cache/bench/converge.json):\n{failures}\n{stderr[-3000:]}")
    return seconds, recap


def host_vars(host, expression, inventory=INVENTORY):
    """The value of a Jinja expression for a host of the inventory, as Ansible templates it (no connection)."""
    module_args = json.dumps({"msg": f"{{{{ {expression} }}}}"})
    result = sh(
        "ansible", "-i", str(inventory), host, "-m", "ansible.builtin.debug", "-a", module_args,
        cwd=ROOT, check=False, env={**os.environ, **JSON_CALLBACK},
    )  # fmt: skip
    try:
        (task,) = parse(result.stdout)["plays"][0]["tasks"]
        answer = task["hosts"][host]
    except (ValueError, KeyError, IndexError) as error:
        sys.exit(f"ansible {host}: no answer ({error!r}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if answer.get("failed"):
        sys.exit(f"ansible {host}: {answer.get('msg')}")
    return answer["msg"]
