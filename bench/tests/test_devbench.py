"""Unit checks of the benchmark runner's parts that need neither Docker nor a deployed stack.

fixtures/converge.json and fixtures/failed.json are ansible.posix.json output of two small playbooks run against
a host named bench-stack (connection local), trimmed to the keys the runner reads: a changed command that
notifies a handler, a loop where one item changes, a skipped task, an ok task, an ignored failure; and a play
whose second task fails.
"""

import json
import sys
from pathlib import Path

import pytest
from devbench import http, playbook, report

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def recap(name):
    return playbook.Recap(playbook.parse((FIXTURES / name).read_text()))


def test_parse_skips_what_ansible_printed_before_the_document():
    text = (FIXTURES / "converge.json").read_text()
    assert playbook.parse("[WARNING]: something\n" + text) == json.loads(text)
    with pytest.raises(ValueError):
        playbook.parse("ERROR! the playbook could not be found\n")
    with pytest.raises(ValueError):
        playbook.parse("")


def test_changed_count_is_the_recap():
    assert recap("converge.json").changed("bench-stack") == 4
    assert recap("converge.json").changed("elsewhere") is None


def test_tasks_changed_and_skipped():
    run = recap("converge.json")
    assert run.task_count("bench-stack") == (6, 1)
    # A loop counts once, a handler under its own name, an ignored failure that reports a change too (as the recap).
    assert run.changed_tasks("bench-stack") == [
        "Changed command",
        "Loop with one change",
        "Failed ignored",
        "Restart thing",
    ]
    assert run.tasks("elsewhere") == []


def test_slowest_tasks_from_the_callback_timings():
    slowest = recap("converge.json").slowest("bench-stack", 3)
    assert [name for name, _ in slowest] == ["Changed command", "Loop with one change", "Failed ignored"]
    assert slowest[0][1] == pytest.approx(0.7, abs=0.05)  # the task sleeps 0.3 s; module start-up adds the rest
    assert all(a[1] >= b[1] for a, b in zip(slowest, slowest[1:]))


def test_task_seconds_with_and_without_microseconds():
    assert playbook._seconds({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:01.500000Z"}) == 1.5
    assert playbook._seconds({"start": "2026-01-01T00:00:00.250000Z"}) == 0.0


def test_failures_name_host_task_and_message():
    assert recap("failed.json").failures() == ["bench-stack: Broken task: the template is broken"]
    assert recap("converge.json").failures() == ["bench-stack: Failed ignored: non-zero return code"]


def test_report_reproduces_the_committed_results():
    """The renderer writes the committed results.md from the committed JSON, line for line but the header."""
    data = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    written = report.render(data, "2026-01-01 00:00", 2).splitlines()
    committed = (RESULTS / "results.md").read_text().splitlines()
    assert written[2].startswith("Written by `bin/toolkit bench` (2026-01-01 00:00 UTC, 2 CPUs")
    assert len(written) == len(committed)
    assert written[:2] + written[3:] == committed[:2] + committed[3:]


def test_report_task_figures_and_an_unmeasured_image():
    provision = json.loads((RESULTS / "provision.json").read_text())
    provision.update(
        converge_tasks=180,
        converge_skipped=40,
        converge_slowest=[["app : Install the venv", 31.24], ["redis : Install Redis", 9.0]],
        rerun_tasks=170,
        rerun_skipped=45,
        rerun_slowest=[["app : Install the venv", 3.0]],
        rerun_changed_tasks=["uwsgi : Write the ini"],
    )
    image = {"measured": False, "reason": "playbooks/image.yml does not exist"}
    text = report.render({"provision": provision, "image": image}, "2026-01-01 00:00", 2)
    assert "The re-run changed: uwsgi : Write the ini." in text
    assert (
        "The converge ran 180 tasks (40 skipped); the slowest: app : Install the venv 31.2 s, "
        "redis : Install Redis 9.0 s." in text
    )
    assert "The re-run ran 170 tasks (45 skipped); the slowest: app : Install the venv 3.0 s." in text
    assert "Not measured: playbooks/image.yml does not exist." in text
    assert "## Websocket fan-out" not in text


def test_ratios_and_missing_values():
    assert report.ratio(3, 4) == "0.75"
    assert report.ratio(3, None) == "n/a"
    assert report.ms(None) == "n/a"


def test_wrk_report():
    out = """Running 4s test @ http://127.0.0.1:80/healthz
  1 threads and 8 connections
  Latency Distribution
     50%    1.10ms
     99%  812.00us
  25874 requests in 4.00s, 3.90MB read
  Non-2xx or 3xx responses: 2
  Socket errors: connect 0, read 1, write 0, timeout 3
Requests/sec:   6468.50

CPU 1.6
"""
    assert http.parse_wrk(out, 4) == {"rps": 6468.5, "p99_ms": pytest.approx(0.812), "errors": 6, "wrk_cpu": 0.4}


def test_direct_uwsgi_runs_the_deployed_layout():
    script = http.direct_uwsgi("/etc/proj/uwsgi.ini", "/opt/proj root", "web")
    assert " /etc/proj/uwsgi.ini > /tmp/bench-uwsgi.ini;" in script
    assert "--reuid=web --regid=\"$(id -g web)\" --init-groups '/opt/proj root/bin/run' " in script
    assert "'/opt/proj root/current/venv/bin/uwsgi' --ini /tmp/bench-uwsgi.ini" in script


def test_command_line(monkeypatch):
    import run

    monkeypatch.setattr(sys, "argv", ["run.py"])
    args = run.arguments()
    assert args.names == run.BENCHMARKS and args.configs == ["default", "baseline", "uvicorn-pubsub"]
    monkeypatch.setattr(sys, "argv", ["run.py", "fanout", "--configs", "default,uvicorn-pubsub", "--clients", "100"])
    args = run.arguments()
    assert (args.names, args.configs, args.clients) == (["fanout"], ["default", "uvicorn-pubsub"], 100)
    for argv in (["run.py", "nonsense"], ["run.py", "fanout", "--configs", "nonsense"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            run.arguments()


def test_image_figures_from_the_result_file():
    from devbench import image

    ref = "devops-channels/bench-image:1-modern-abc"
    row = image.figures(148.2, {"ref": ref, "size": "282412345"})
    assert row == {"measured": True, "build_s": 148.2, "image": ref, "size_mb": 282}
    assert image.figures(1.0, {"ref": "x", "size": 5_000_000})["size_mb"] == 5
