"""Deploys under load through the balancer: a rolling deploy of a changed release without draining cuts the clients,
the rolling rollback to the release before with draining loses nothing (and deploying that release again changes
nothing), and an app host's container stopped under load leaves the balancer while its clients resume on the other
host.

The load is tests/cluster/load.py from the controller: websocket clients speaking the page's resume protocol, HTTP
GETs and numbered HTTP pushes, all through the balancer, for as long as the deploy runs. Figures are printed; the
assertions are on correctness only. The tests run in file order and share the cluster's state."""

import os
import shutil
import subprocess
import time

from helpers import HTTP_CONCURRENCY, PROJECT, WS_CLIENTS, playbook, servers, summary, under_load, wait_for_status

# Close codes a client sees when the server moved it on purpose (4012) or it closed itself.
CLEAN_CLOSES = {"4012", "1000"}


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
        "asgi_drain_command: ['/usr/local/bin/{{ devops_user }}-manage', drain_websockets]\n"
    )
    return f"@{variables}"


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


def test_a_rolling_deploy_without_draining_cuts_the_clients(lb, site, tmp_path):
    release = changed_release(tmp_path, "b")
    seconds, report = under_load(
        site, tmp_path, "no drain", lambda: playbook("deploy.yml", "-e", release, "-e", "asgi_drain=false")[0]
    )
    print(summary("rolling deploy without draining", seconds, report))
    # Proof that the load can fail: the restart cuts the websockets (daphne closes them without a close frame the
    # client could act on) and whatever was in flight on the restarted processes.
    failures = abnormal_closes(report) + report["http"]["failed"] + report["ws"]["missing_total"]
    assert failures > 0, report
    assert set(all_up(lb).values()) == {"UP"}


def test_the_rolling_rollback_with_draining_loses_nothing_and_its_rerun_changes_nothing(lb, site, tmp_path):
    # The same kind of run with draining on: back from release b to the converged release, each host drained and
    # restarted in turn. (One deploy under load per case keeps the scenario short: a rollback is a rolling deploy of
    # the release before, with the same restart and drain.)
    seconds, report = under_load(
        site, tmp_path, "rollback", lambda: playbook("deploy.yml", "-e", "app_rollback=true")[0]
    )
    print(summary("rolling rollback with draining", seconds, report))
    assert_nothing_lost(report)
    assert report["ws"]["reconnects"] >= WS_CLIENTS, "the rollback moved no client: nothing was restarted"
    assert abnormal_closes(report) == 0, report["ws"]["close_codes"]
    assert set(all_up(lb).values()) == {"UP"}
    # Deploying the converged release again finds it current: it restarts nothing, drains nothing.
    _, again = playbook("deploy.yml")
    recap = [line for line in again.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), "\n".join(recap)
    assert set(all_up(lb).values()) == {"UP"}


def test_a_stopped_app_host_leaves_the_balancer_and_its_clients_resume_elsewhere(lb, apps, site, settings, tmp_path):
    name = sorted(apps)[-1]
    interval = int(settings["haproxy_check_interval"]) / 1000
    # Each failed check takes up to the check timeout (a vanished host answers nothing), then the next interval.
    check_timeout = int(settings["haproxy_check_timeout"]) / 1000
    down_limit = (interval + check_timeout) * int(settings["haproxy_check_fall"]) + interval + 2
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
