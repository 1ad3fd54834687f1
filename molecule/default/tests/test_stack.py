"""The deployed stack, checked from inside each host: packages, users, modes, processes, end to end."""

import os
import re
import time

import pytest
from conftest import APP_ROOT, ENV_FILE, RUN_DIR, WS, frames, http_get, uwsgi_requests

# --- packages and files -------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["redis-server", "nginx", "supervisor", "python3-venv"])
def test_debian_packages_are_installed(host, package):
    assert host.package(package).is_installed


PROFILE_VERSIONS = {
    # scenario: (Django, channels, daphne) version prefixes
    "default": ("5.2.", "4.", "4."),
    "legacy": ("1.11.29", "2.1.4", "2.2."),
}


def test_the_venv_has_the_profile_of_the_scenario(host):
    versions = host.check_output(
        APP_ROOT + "/current/venv/bin/python -c "
        "'import django, channels, daphne; "
        "print(django.get_version(), channels.__version__, daphne.__version__)'"
    ).split()
    expected = PROFILE_VERSIONS[os.environ.get("MOLECULE_SCENARIO_NAME", "default")]
    assert all(v.startswith(e) for v, e in zip(versions, expected)), versions


def test_app_user_cannot_log_in(host):
    user = host.user("devops")
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")


def test_env_file_is_readable_by_the_app_user_only(host):
    env = host.file(ENV_FILE)
    assert env.user == "devops" and env.group == "devops"
    assert env.mode == 0o640
    assert "DJANGO_SECRET_KEY=" in env.content_string


def test_socket_dir_is_shared_with_nginx_only(host):
    run = host.file(RUN_DIR)
    assert run.is_directory and run.user == "devops" and run.group == "www-data"
    assert run.mode == 0o2750
    assert "d /run/devops 2750 devops www-data" in host.file("/etc/tmpfiles.d/devops.conf").content_string


def test_sockets_have_the_owner_and_mode_nginx_needs(host, daphne_count):
    uwsgi = host.file(RUN_DIR + "/uwsgi.sock")
    assert uwsgi.is_socket and uwsgi.user == "devops" and uwsgi.group == "www-data"
    assert uwsgi.mode & 0o060 == 0o060 and uwsgi.mode & 0o007 == 0
    for n in range(daphne_count):
        sock = host.file(f"{RUN_DIR}/daphne-{n}.sock")
        assert sock.is_socket and sock.user == "devops" and sock.group == "www-data"


def test_www_data_can_reach_the_sockets(host):
    assert host.run("runuser -u www-data -- test -x /run/devops").rc == 0
    assert host.run("runuser -u nobody -- test -x /run/devops").rc != 0


# --- redis ---------------------------------------------------------------------------------------------


def test_redis_refuses_commands_without_the_password(host):
    out = host.run("redis-cli -h 127.0.0.1 ping")
    assert "NOAUTH" in out.stdout + out.stderr


def test_redis_answers_with_the_password(host):
    out = host.check_output(f"sh -c '. {ENV_FILE}; REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping'")
    assert out.strip() == "PONG"


def test_redis_listens_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn 'sport = :6379'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, addresses


# --- processes -----------------------------------------------------------------------------------------


def test_every_daphne_and_uwsgi_process_is_running(host, daphne_count):
    status = host.check_output("supervisorctl status")
    lines = [line.split() for line in status.splitlines()]
    assert daphne_count == int(host.check_output("nproc"))
    assert {name: state for name, state, *_ in lines} == {
        **{f"daphne:daphne-{n}": "RUNNING" for n in range(daphne_count)},
        "uwsgi": "RUNNING",
    }


def test_nginx_config_is_valid(host):
    assert host.run("nginx -t").rc == 0
    assert host.service("nginx").is_running


def test_services_are_enabled(host):
    for name in ("nginx", "supervisor", "redis-server"):
        assert host.service(name).is_enabled, name


# --- end to end through nginx ------------------------------------------------------------------------


def test_index_is_answered_by_uwsgi(host):
    before = uwsgi_requests(host)
    status, headers, body = http_get(host, "/")
    assert status == 200 and "/static/deploy/deploy.js" in body
    assert "nginx/" not in headers.get("Server", "")
    assert uwsgi_requests(host) > before


def test_static_files_are_served_by_nginx(host):
    status, headers, _ = http_get(host, "/static/deploy/deploy.css")
    assert status == 200 and "max-age" in headers.get("Cache-Control", "")


def test_readyz_through_nginx(host):
    status, _, body = http_get(host, "/readyz")
    assert status == 200, body


def test_websocket_is_answered_by_daphne(host, service):
    out = host.check_output("/usr/local/bin/wsprobe roundtrip %s", WS.format(service=service))
    assert frames(out)[0]["service"] == service
    logs = host.check_output("cat /var/log/devops/daphne-*.access.log")
    assert f"/ws/deploy/{service}/" in logs


def test_two_clients_receive_a_third_clients_message_and_a_manage_push(host, service):
    url = WS.format(service=service)
    script = f"""
set -e
cd /tmp
for c in a b; do
  /usr/local/bin/wsprobe listen {url} --count 2 --timeout 30 --ready-file {service}.$c.ready > {service}.$c.out &
done
for i in $(seq 100); do [ -e {service}.a.ready ] && [ -e {service}.b.ready ] && break; sleep 0.1; done
/usr/local/bin/wsprobe send {url} from-client-{service} > /dev/null
echo pushed-{service} | devops-manage push {service} -
wait
cat {service}.a.out; echo ---; cat {service}.b.out
"""
    out = host.check_output("bash -c %s", script)
    first, second = out.split("---")
    for listener in (first, second):
        messages = [(f["message"], f["source"]) for f in frames(listener)]
        assert messages == [(f"from-client-{service}", "client"), (f"pushed-{service}", "push")]


def test_daphne_comes_back_after_kill_9_and_serves_pushes(host, service):
    before = host.check_output("supervisorctl pid daphne:daphne-0").strip()
    host.check_output(f"kill -9 {before}")
    for _ in range(60):
        time.sleep(0.5)
        now = host.check_output("supervisorctl pid daphne:daphne-0").strip()
        status = host.check_output("supervisorctl status daphne:daphne-0")
        if now not in ("0", before) and "RUNNING" in status:
            break
    else:
        pytest.fail("daphne-0 was not restarted by supervisor")
    sock = RUN_DIR + "/daphne-0.sock"
    url = WS.format(service=service)
    script = f"""
set -e
cd /tmp
for i in $(seq 100); do [ -S {sock} ] && break; sleep 0.1; done
/usr/local/bin/wsprobe listen {url} --unix {sock} --count 1 --timeout 30 --ready-file {service}.ready > {service}.out &
for i in $(seq 100); do [ -e {service}.ready ] && break; sleep 0.1; done
devops-manage push {service} after-restart
wait
cat {service}.out
"""
    received = frames(host.check_output("bash -c %s", script))
    assert [f["message"] for f in received] == ["after-restart"]


def test_manage_push_rejects_a_bad_service_name(host):
    out = host.run("devops-manage push 'bad name!' hello")
    assert out.rc == 2
    assert re.search(r"service", out.stderr + out.stdout, re.I)


def test_twenty_rounds_of_clients_keep_receiving_pushes(host, service):
    """Clients that come and go must not starve later ones (the channels-redis 2.3 lock defect)."""
    url = WS.format(service=service)
    script = f"""
set -e
cd /tmp
for round in $(seq 20); do
  for c in a b c; do
    rm -f {service}.$c.ready
    /usr/local/bin/wsprobe listen {url} --count 1 --timeout 15 --ready-file {service}.$c.ready \
      > {service}.$round.$c.out &
  done
  for i in $(seq 150); do
    [ -e {service}.a.ready ] && [ -e {service}.b.ready ] && [ -e {service}.c.ready ] && break
    sleep 0.1
  done
  devops-manage push {service} round-$round
  wait
done
cat {service}.*.out
"""
    received = [f["message"] for f in frames(host.check_output("bash -c %s", script))]
    assert sorted(received) == sorted(f"round-{r}" for r in range(1, 21) for _ in "abc")


def test_a_consumer_that_raises_is_rejected_fast_and_logged(host, service):
    """With Redis down, group_add raises in connect(): the client must be turned away at once, and the
    error logged (the CancelledError defect of the legacy pins left it hanging with nothing logged)."""
    errors = "cat /var/log/devops/daphne-[0-9].log | grep -c 'Exception inside application' || true"
    before = int(host.check_output(errors))
    host.check_output("systemctl stop redis-server")
    try:
        started = time.monotonic()
        out = host.run("/usr/local/bin/wsprobe roundtrip %s --timeout 20", WS.format(service=service))
        elapsed = time.monotonic() - started
    finally:
        host.check_output("systemctl start redis-server")
    assert out.rc != 0, out.stdout
    assert elapsed < 10, f"rejection took {elapsed:.1f}s"
    # supervisor writes daphne's output to the log a moment after the handshake was refused.
    for _ in range(20):
        if int(host.check_output(errors)) > before:
            break
        time.sleep(0.5)
    else:
        pytest.fail("daphne logged no exception for the refused client")
