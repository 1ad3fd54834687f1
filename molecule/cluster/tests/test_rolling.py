"""Deploys under load through the balancer: a rolling deploy of a changed release with draining loses nothing, the
same deploy without draining cuts the clients, a rollback under load loses nothing and its re-run changes nothing,
and an app host's container stopped under load leaves the balancer while its clients resume on the other host.

The load is tests/cluster/load.py from the controller: websocket clients speaking the page's resume protocol, HTTP
GETs and numbered HTTP pushes, all through the balancer, for as long as the deploy runs. Figures are printed; the
assertions are on correctness only. The tests run in file order and share the cluster's state."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from helpers import servers, wait_for_status

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LOAD = os.path.join(PROJECT, "tests", "cluster", "load.py")
WS_CLIENTS, HTTP_CONCURRENCY, PUSH_RATE = 50, 20, 20
# Close codes a client sees when the server moved it on purpose (4012) or it closed itself.
CLEAN_CLOSES = {"4012", "1000"}


@pytest.fixture(scope="module")
def site(apps, lb_address, settings):
    """What the load tool needs: the balancer's URL, the site's name and the push token (from an app host's env)."""
    first = apps[sorted(apps)[0]]
    env = first.check_output("cat /etc/devops/devops.env")
    token = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("DEPLOY_PUSH_TOKEN="))
    return {
        "url": f"http://{lb_address}:{settings['haproxy_listen_port']}",
        "host": settings["haproxy_health_host"],
        "token": token.strip().strip("'\""),
    }


def playbook(name, *extra):
    """Run playbooks/<name> against the whole cluster as the README does; returns (seconds, completed process)."""
    started = time.monotonic()
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            os.path.join(PROJECT, "playbooks", name),
            *extra,
        ],
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return time.monotonic() - started, result


def changed_release(tmp_path, label):
    """A copy of the bundled app with a marker: a new release, deployed as a project of its own (like
    test_deploy_cycle in the default scenario) that keeps the drain command of the bundled app."""
    source = tmp_path / f"app-{label}"
    shutil.copytree(os.path.join(PROJECT, "app"), source, ignore=shutil.ignore_patterns("__pycache__", "var"))
    template = source / "deploy" / "templates" / "deploy" / "index.html"
    template.write_text(template.read_text() + f"\n<!-- release {label} -->\n")
    variables = tmp_path / f"vars-{label}.yml"
    variables.write_text(
        "app_source_type: dir\n"
        f"app_source_dir: {source}\n"
        "app_settings_overlay: false\n"
        "app_health_served: project\n"
        "app_requirements_file: requirements/{{ app_profile }}.txt\n"
        "app_extra_env: {DEPLOY_MAX_MESSAGE_BYTES: 65536, DEPLOY_PUSH_TOKEN: '{{ app_push_token }}'}\n"
        "asgi_drain_command: ['/usr/local/bin/{{ devops_user }}-manage', drain_websockets]\n"
    )
    return f"@{variables}"


def under_load(site, tmp_path, label, action):
    """Run `action()` while the load runs; returns (seconds the action took, the load's report)."""
    stop, report = tmp_path / f"stop-{label}", tmp_path / f"report-{label}.json"
    load = subprocess.Popen(
        [
            sys.executable,
            LOAD,
            "--url",
            site["url"],
            "--host",
            site["host"],
            "--service",
            f"{label}-{uuid.uuid4().hex[:6]}",
            "--ws-clients",
            str(WS_CLIENTS),
            "--http-concurrency",
            str(HTTP_CONCURRENCY),
            "--http-path",
            "/healthz",
            "--http-pause",
            "0.05",
            "--push-rate",
            str(PUSH_RATE),
            "--push-token",
            site["token"],
            "--stop-file",
            str(stop),
            "--settle",
            "20",
            "--report",
            str(report),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(8)  # every client connected and the pushes flowing before the action starts
        assert load.poll() is None, load.stdout.read()
        seconds = action()
        time.sleep(3)  # a few pushes after the action too
    finally:
        stop.touch()
        output, _ = load.communicate(timeout=120)
    print(f"\n--- {label}: load during the action ---\n{output}")
    assert load.returncode == 0, output
    return seconds, json.loads(report.read_text())


def summary(label, seconds, report):
    ws, http, push = report["ws"], report["http"], report["push"]
    gap = ws["gap_ms"]
    return (
        f"{label}: {seconds:.0f} s; HTTP {http['ok']}/{http['requests']} ok, {http['failed']} failed "
        f"{http['failures_by_kind']}; pushes {push['acknowledged']}/{push['sent']} acknowledged; websocket clients "
        f"{ws['clients_complete']}/{ws['clients']} complete, reconnects {ws['reconnects']} {ws['close_codes']}, "
        f"reconnect gap max {gap['max']} ms p99 {gap['p99']} ms, replayed {ws['replayed']}, gap frames "
        f"{ws['gap_frames']}, missing {ws['missing_total']}, duplicates {ws['duplicates_total']}, out of order "
        f"{ws['out_of_order_total']}"
    )


def abnormal_closes(report):
    return sum(count for code, count in report["ws"]["close_codes"].items() if str(code) not in CLEAN_CLOSES)


def assert_nothing_lost(report):
    ws = report["ws"]
    assert report["http"]["failed"] == 0, report["http"]
    assert report["push"]["acknowledged"] > 0
    assert ws["clients_complete"] == ws["clients"] == WS_CLIENTS, ws["worst_clients"]
    assert ws["missing_total"] == ws["duplicates_total"] == ws["out_of_order_total"] == 0
    assert ws["gap_frames"] == 0


def all_up(lb):
    return {name: row["status"] for name, row in servers(lb).items()}


def test_a_rolling_deploy_with_draining_loses_nothing(lb, site, tmp_path):
    release = changed_release(tmp_path, "a")
    seconds, report = under_load(site, tmp_path, "rolling deploy", lambda: playbook("deploy.yml", release)[0])
    print(summary("rolling deploy with draining", seconds, report))
    assert_nothing_lost(report)
    assert report["ws"]["reconnects"] >= WS_CLIENTS, "the deploy moved no client: nothing was restarted"
    assert abnormal_closes(report) == 0, report["ws"]["close_codes"]
    assert set(all_up(lb).values()) == {"UP"}


def test_the_same_deploy_without_draining_cuts_the_clients(lb, site, tmp_path):
    release = changed_release(tmp_path, "b")
    seconds, report = under_load(
        site, tmp_path, "no drain", lambda: playbook("deploy.yml", release, "-e", "asgi_drain=false")[0]
    )
    print(summary("rolling deploy without draining", seconds, report))
    # Proof that the load can fail: the restart cuts the websockets (daphne closes them without a close frame the
    # client could act on) and whatever was in flight on the restarted processes.
    failures = abnormal_closes(report) + report["http"]["failed"] + report["ws"]["missing_total"]
    assert failures > 0, report
    assert set(all_up(lb).values()) == {"UP"}


def test_a_rollback_under_load_loses_nothing_and_its_rerun_changes_nothing(lb, site, tmp_path):
    seconds, report = under_load(
        site, tmp_path, "rollback", lambda: playbook("deploy.yml", "-e", "app_rollback=true")[0]
    )
    print(summary("rollback with draining", seconds, report))
    assert_nothing_lost(report)
    assert abnormal_closes(report) == 0, report["ws"]["close_codes"]
    # The rollback went back to release a: deploying release a again finds it current, restarts nothing, drains nothing.
    _, again = playbook("deploy.yml", changed_release(tmp_path, "a"))
    recap = [line for line in again.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), "\n".join(recap)
    assert set(all_up(lb).values()) == {"UP"}


def test_a_stopped_app_host_leaves_the_balancer_and_its_clients_resume_elsewhere(lb, apps, site, settings, tmp_path):
    name = sorted(apps)[-1]
    interval = int(settings["haproxy_check_interval"]) / 1000
    down_limit = interval * int(settings["haproxy_check_fall"]) + interval + 2
    timings = {}

    def stop_the_container():
        started = time.monotonic()
        subprocess.run(["docker", "kill", name], check=True, capture_output=True)
        timings["down"] = wait_for_status(lb, name, "DOWN", down_limit)
        time.sleep(5)  # its clients reconnect to the other host and resume
        return time.monotonic() - started

    try:
        seconds, report = under_load(site, tmp_path, "app host killed", stop_the_container)
    finally:
        subprocess.run(["docker", "start", name], check=True, capture_output=True)
    print(
        summary(
            f"{name} killed, DOWN after {timings.get('down', -1):.1f} s (limit {down_limit:.1f} s)", seconds, report
        )
    )
    ws = report["ws"]
    # Requests in flight on the killed host when it died fail (counted above); nothing else may.
    assert report["http"]["failed"] <= HTTP_CONCURRENCY, report["http"]
    assert ws["clients_complete"] == ws["clients"] == WS_CLIENTS, ws["worst_clients"]
    assert ws["missing_total"] == ws["duplicates_total"] == ws["out_of_order_total"] == 0
    # The container boots again (systemd, supervisor, nginx) and the balancer takes it back.
    wait_for_status(lb, name, "UP", 180)
