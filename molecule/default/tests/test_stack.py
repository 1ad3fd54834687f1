"""The deployed stack, checked from inside each host: packages, users, modes, processes, end to end."""

import json
import re
import shlex
import time
import uuid

import pytest
from helpers import WS, frames, http_get, uwsgi_requests

# --- packages and files -------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["redis-server", "nginx", "supervisor", "python3-venv"])
def test_debian_packages_are_installed(host, package):
    assert host.package(package).is_installed


PROFILE_VERSIONS = {
    # profile: (Django, channels, daphne) version prefixes
    "modern": ("5.2.", "4.", "4."),
    "legacy": ("1.11.29", "2.1.4", "2.2."),
}


def test_the_venv_has_the_profile_of_the_host(host, layout):
    versions = host.check_output(
        layout["root"] + "/current/venv/bin/python -c "
        "'import django, channels, daphne; "
        "print(django.get_version(), channels.__version__, daphne.__version__)'"
    ).split()
    expected = PROFILE_VERSIONS[layout["profile"]]
    assert all(v.startswith(e) for v, e in zip(versions, expected)), versions


def test_the_layout_follows_the_project_name(host, layout):
    """Every path and the user derive from devops_project (a host of another name has nothing at devops' paths)."""
    name = layout["project"]
    assert (layout["user"], layout["root"], layout["run_dir"]) == (name, f"/srv/{name}", f"/run/{name}")
    assert host.file(f"{layout['root']}/current").is_symlink
    assert host.file(f"/usr/local/bin/{name}-manage").exists
    if name != "devops":
        assert not host.file("/srv/devops").exists and not host.user("devops").exists


def test_app_user_cannot_log_in(host, layout):
    user = host.user(layout["user"])
    assert user.exists
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")


def test_env_file_is_readable_by_the_app_and_writable_by_root_only(host, layout):
    env = host.file(layout["env_file"])
    assert env.user == "root" and env.group == layout["user"]
    assert env.mode == 0o640
    assert "DJANGO_SECRET_KEY=" in env.content_string
    # The app reads its settings and cannot rewrite them (a compromised app process cannot turn DEBUG on).
    user, path = layout["user"], layout["env_file"]
    assert host.run("runuser -u %s -- head -c0 %s", user, path).rc == 0
    refused = host.run("runuser -u %s -- sh -c %s", user, f": >> {path}")
    assert refused.rc != 0 and "Permission denied" in refused.stderr


def test_socket_dir_is_shared_with_nginx_only(host, layout):
    user, run_dir = layout["user"], layout["run_dir"]
    run = host.file(run_dir)
    assert run.is_directory and run.user == user and run.group == "www-data"
    assert run.mode == 0o2750
    tmpfiles = host.file(f"/etc/tmpfiles.d/{user}.conf").content_string
    assert f"d {run_dir} 2750 {user} www-data" in tmpfiles


def test_sockets_have_the_owner_and_mode_nginx_needs(host, layout, asgi_count):
    user, run_dir = layout["user"], layout["run_dir"]
    uwsgi = host.file(run_dir + "/uwsgi.sock")
    assert uwsgi.is_socket and uwsgi.user == user and uwsgi.group == "www-data"
    assert uwsgi.mode & 0o060 == 0o060 and uwsgi.mode & 0o007 == 0
    for n in range(asgi_count):
        sock = host.file(f"{run_dir}/{layout['program']}-{n}.sock")
        assert sock.is_socket and sock.user == user and sock.group == "www-data"


def test_www_data_can_reach_the_sockets(host, layout):
    assert host.run("runuser -u www-data -- test -x %s", layout["run_dir"]).rc == 0
    assert host.run("runuser -u nobody -- test -x %s", layout["run_dir"]).rc != 0


# --- redis ---------------------------------------------------------------------------------------------


def test_redis_refuses_commands_without_the_password(host):
    out = host.run("redis-cli -h 127.0.0.1 ping")
    assert "NOAUTH" in out.stdout + out.stderr


def test_redis_answers_the_apps_user_with_its_password(host, layout):
    ping = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --no-auth-warning -h 127.0.0.1 --user "$REDIS_USERNAME" ping'
    out = host.check_output(f"sh -c '. {layout['env_file']}; {ping}'")
    assert out.strip() == "PONG"


def test_redis_listens_on_loopback_only(host):
    listeners = host.check_output("ss -Hltn 'sport = :6379'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, addresses


# --- processes -----------------------------------------------------------------------------------------


def test_every_asgi_and_uwsgi_process_is_running(host, layout, asgi_count):
    """The chosen server only: the other one is not registered with supervisor."""
    program, prefix = layout["program"], layout["program"][: -len(layout["server"])]
    ours = {prefix + name for name in ("daphne", "uvicorn", "uwsgi")}
    status = host.check_output("supervisorctl status")
    # Another project on the host (test_own_project) has programs of its own prefix.
    lines = [line.split() for line in status.splitlines() if line.split(":")[0].split()[0] in ours]
    assert asgi_count == int(host.check_output("nproc"))
    assert {name: state for name, state, *_ in lines} == {
        **{f"{program}:{program}-{n}": "RUNNING" for n in range(asgi_count)},
        layout["uwsgi_program"]: "RUNNING",
    }


def test_nginx_config_is_valid(host):
    assert host.run("nginx -t").rc == 0
    assert host.service("nginx").is_running


def test_services_are_enabled(host):
    for name in ("nginx", "supervisor", "redis-server"):
        assert host.service(name).is_enabled, name


# --- end to end through nginx ------------------------------------------------------------------------


def test_index_is_answered_by_uwsgi(host, layout):
    stats = layout["run_dir"] + "/uwsgi-stats.sock"
    before = uwsgi_requests(host, stats)
    status, headers, body = http_get(host, "/")
    assert status == 200 and "/static/deploy/deploy.js" in body
    assert "nginx/" not in headers.get("Server", "")
    assert uwsgi_requests(host, stats) > before


def test_static_files_are_served_by_nginx(host):
    status, headers, _ = http_get(host, "/static/deploy/deploy.css")
    assert status == 200 and "max-age" in headers.get("Cache-Control", "")


CSP = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"


@pytest.mark.parametrize("path", ["/", "/static/deploy/deploy.css", "/static/no-such-file.css", "/healthz"])
def test_every_answer_has_the_content_security_and_permissions_policy(host, path):
    status, headers, _ = http_get(host, path)
    assert headers.get("Content-Security-Policy") == CSP, (status, headers)
    assert headers.get("Permissions-Policy", "").startswith("camera=(), microphone=()"), headers


def test_the_page_has_its_icon_so_a_browser_asks_for_no_missing_favicon(host):
    _, _, body = http_get(host, "/")
    icon = re.search(r'<link rel="icon" href="([^"]+)"', body)
    assert icon, body[:500]
    status, headers, _ = http_get(host, icon.group(1))
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"


def test_a_request_for_an_unknown_host_name_gets_no_answer_and_never_reaches_the_app(host, layout):
    script = (
        "import http.client, sys; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=10)\n"
        "c.request('GET', '/', headers={'Host': sys.argv[1]})\n"
        "try: print(c.getresponse().status)\n"
        "except http.client.RemoteDisconnected: print('closed without an answer')"
    )
    assert host.check_output("python3 -c %s %s", script, "unknown.example") == "closed without an answer"
    assert host.check_output("python3 -c %s %s", script, "localhost") == "200"
    # Without nginx's default server the request would reach Django, which refuses it as a DisallowedHost (400).
    socket = f"{layout['run_dir']}/{layout['program']}-0.sock"
    status, _, _ = http_get(host, "/", unix=socket, headers={"Host": "unknown.example"})
    assert status == 400


def test_readyz_through_nginx(host):
    status, _, body = http_get(host, "/readyz")
    assert status == 200, body


def test_readyz_answers_the_host_itself_only_and_healthz_everyone(host):
    # From the host's own network address, not the loopback: what any other client of the site looks like.
    address = host.check_output("hostname -I").split()[0]
    script = (
        "import http.client, sys; c = http.client.HTTPConnection(sys.argv[1], 80, timeout=10)\n"
        "c.request('GET', sys.argv[2], headers={'Host': 'localhost'}); print(c.getresponse().status)"
    )
    assert host.check_output("python3 -c %s %s %s", script, address, "/readyz") == "403"
    assert host.check_output("python3 -c %s %s %s", script, address, "/healthz") == "200"


def metric(text, name, **labels):
    """The value of one sample of a Prometheus text page (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))  # the page sorts the labels
    line = f"{name}{{{wanted}}} " if labels else f"{name} "
    return next((float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)), 0.0)


#: A shell word: the metrics page as the host itself reads it.
SCRAPE = shlex.quote(
    "import http.client; c = http.client.HTTPConnection('127.0.0.1', 80, timeout=10)\n"
    "c.request('GET', '/metrics', headers={'Host': 'localhost'}); print(c.getresponse().read().decode())"
)


def test_metrics_count_the_open_websockets_of_every_process_and_the_pushes(host, layout, service, wsprobe):
    # Three clients on whichever ASGI processes nginx picks, the page served by a uwsgi worker: the counts of every
    # process added up (prometheus_client's multiprocess mode, in the app's runtime directory).
    url, manage = WS.format(service=service), f"{layout['project']}-manage"
    status, _, before = http_get(host, "/metrics")
    assert status == 200, before
    script = f"""
set -e
cd /tmp
for c in a b c; do
  {wsprobe} listen {url} --count 1 --timeout 60 --ready-file {service}.m$c.ready > /dev/null &
done
for i in $(seq 300); do
  [ -e {service}.ma.ready ] && [ -e {service}.mb.ready ] && [ -e {service}.mc.ready ] && break
  sleep 0.1
done
for c in a b c; do test -e {service}.m$c.ready; done  # every listener connected within 30 s
python3 -c {SCRAPE} > {service}.metrics
echo counted | {manage} push {service} -
wait
cat {service}.metrics
"""
    during = host.check_output("bash -c %s", script)

    def opened(page):
        # A process that has labelled MAX_SERVICES others counts this one under "_other" (a long run of checks
        # names a service each): those are this check's too, no other client connects meanwhile.
        other = metric(page, "deploy_websockets_open", service="_other") - metric(
            before, "deploy_websockets_open", service="_other"
        )
        return metric(page, "deploy_websockets_open", service=service) + other

    assert opened(during) == 3, during
    for _ in range(50):  # the server sees the clients go a moment after they have
        _, _, after = http_get(host, "/metrics")
        if opened(after) == 0:
            break
        time.sleep(0.2)
    assert opened(after) == 0, after
    command = {"entry_point": "command"}
    assert metric(after, "deploy_pushes_total", **command) == metric(before, "deploy_pushes_total", **command) + 1
    live = {"kind": "live"}
    assert metric(after, "deploy_deliveries_total", **live) >= metric(before, "deploy_deliveries_total", **live) + 3
    assert metric(after, "deploy_http_request_duration_seconds_count", view="metrics", status="2xx") >= 2


def test_metrics_answer_the_host_itself_only(host):
    address = host.check_output("hostname -I").split()[0]
    script = (
        "import http.client, sys; c = http.client.HTTPConnection(sys.argv[1], 80, timeout=10)\n"
        "c.request('GET', '/metrics', headers={'Host': 'localhost'}); print(c.getresponse().status)"
    )
    assert host.check_output("python3 -c %s %s", script, address) == "403"


UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}

#: Requests through nginx (keep-alive), at most argv[1], until the log file argv[2] that had inode argv[3] when the
#: test started is the file argv[4] (or, with "", none of them: dropped); prints how many were sent and where it is.
ROTATE = """
import glob, http.client, os, sys
limit, log, inode, marker, wanted = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def holds_marker(path):
    with open(path, errors="replace") as f:
        return marker in f.read()
# The first log is the file with its inode that still holds its marker line: once it is dropped the file system may
# give its inode to the next new log.
def place():
    return next((p for p in glob.glob(log + "*") if os.stat(p).st_ino == inode and holds_marker(p)), "")
conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
for sent in range(1, limit + 1):
    conn.request("GET", "/healthz", headers={"Host": "localhost"})
    conn.getresponse().read()
    if sent % 10 == 0 and place() == wanted:
        break
print(sent, place() or "dropped")
"""


def test_supervisor_rotates_the_uwsgi_log_at_its_size_and_keeps_its_backups(host, layout):
    size = int(layout["log_max_bytes"][:-2]) * UNITS[layout["log_max_bytes"][-2:]]
    if size > 1024**2:
        pytest.skip(f"this host keeps logs up to {layout['log_max_bytes']}: filling one would take minutes")
    log, backups = f"{layout['log_dir']}/{layout['uwsgi_program']}.log", int(layout["log_backups"])
    inode, marker = host.check_output("stat -c %%i %s", log), uuid.uuid4().hex
    assert http_get(host, f"/healthz?rotation={marker}")[0] == 200
    logged = f"for i in $(seq 50); do grep -q {marker} {log} && exit 0; sleep 0.1; done; exit 1"
    assert host.run("sh -c %s", logged).rc == 0, "uwsgi did not log the marker request"
    # uwsgi logs a line of about 150 bytes per request: the log passes its size well within size / 50 requests.
    # Each rotation renames log.n to log.n+1 and the log to log.1; the one after log.<backups> drops it.
    for wanted in [f"{log}.{n}" for n in range(1, backups + 1)] + [""]:
        out = host.check_output("python3 -c %s %s %s %s %s %s", ROTATE, str(size // 50), log, inode, marker, wanted)
        print(f"\nthe first log: {out}")
        assert out.split()[1] == (wanted or "dropped"), out
    files = host.check_output(f"ls -1 {log}*").split()
    assert sorted(files) == [log] + [f"{log}.{n}" for n in range(1, backups + 1)], files
    # supervisor rotates after the write that passes the size: a file ends at most one log line over it.
    sizes = [(path, host.file(path).size) for path in files]
    assert all(length <= size + 4096 for _, length in sizes), sizes
    assert all(length >= size for path, length in sizes if path != log), sizes


def test_nginx_access_log_lines_have_the_chosen_format(host, layout):
    probe = uuid.uuid4().hex
    status, _, _ = http_get(host, f"/healthz?probe={probe}")
    assert status == 200
    line = host.check_output("grep -h %s /var/log/nginx/access.log", probe).splitlines()[-1]
    if layout["access_log_format"] == "json":
        entry = json.loads(line)
        assert (entry["client"], entry["method"], entry["status"]) == ("127.0.0.1", "GET", 200), entry
        assert entry["uri"] == f"/healthz?probe={probe}" and entry["host"] == "localhost", entry
    else:
        assert line.startswith("127.0.0.1 - - [") and f'"GET /healthz?probe={probe} HTTP/1.1" 200 ' in line, line


def test_logrotate_rotates_nginx_logs_and_nginx_writes_the_new_ones(host):
    # Debian's /etc/logrotate.d/nginx (daily), with the logrotate the nginx role installs; -f: now.
    host.check_output("logrotate -f /etc/logrotate.d/nginx")
    assert host.file("/var/log/nginx/access.log.1").exists
    probe = uuid.uuid4().hex
    for _ in range(50):  # nginx reopens its logs on the signal logrotate sent
        http_get(host, f"/healthz?probe={probe}")
        if host.run("grep -q %s /var/log/nginx/access.log", probe).rc == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("nginx did not write to the new access.log after the rotation")


def test_websocket_is_answered_by_the_asgi_server(host, layout, service, wsprobe):
    out = host.check_output(f"{wsprobe} roundtrip %s", WS.format(service=service))
    assert frames(out)[0]["service"] == service
    # daphne writes an access log file per process; uvicorn logs requests to the process log.
    logs = host.check_output("cat %s/%s-*.log", layout["log_dir"], layout["program"])
    assert f"/ws/deploy/{service}/" in logs


def test_daphne_access_log_lines_have_the_chosen_format(host, layout, service, wsprobe):
    if layout["server"] != "daphne":
        pytest.skip("uvicorn writes its own access log lines")
    host.check_output(f"{wsprobe} roundtrip %s", WS.format(service=service))
    path = f"/ws/deploy/{service}/"
    for _ in range(50):  # the server logs the disconnection a moment after the client has gone
        logs = host.check_output("cat %s/%s-*.log", layout["log_dir"], layout["program"])
        lines = [line for line in logs.splitlines() if path in line]
        if any("WSDISCONNECT" in line for line in lines):
            break
        time.sleep(0.1)
    if layout["access_log_format"] == "json":
        entries = [json.loads(line) for line in lines]
        assert {entry["action"] for entry in entries} >= {"WSCONNECTING", "WSCONNECT", "WSDISCONNECT"}, entries
        assert all(entry["path"] == path and entry["client"] for entry in entries), entries
    else:
        assert any(f'"WSCONNECT {path}"' in line for line in lines), lines


def test_the_asgi_server_refuses_a_message_over_the_apps_maximum_and_serves_the_others(host, layout, service, wsprobe):
    if layout["profile"] == "legacy":
        pytest.skip("daphne 2.2 (legacy profile) has no message size option: the app refuses the message itself")
    url, limit = WS.format(service=service), int(layout["max_message"])
    # The largest frame the app takes: {"message": "x..."} is 15 bytes longer than its message.
    fits = host.run(f"{wsprobe} send %s %s --timeout 20", url, "x" * (limit - 15))
    assert fits.rc == 0, fits.stdout
    # Over the server's limit (the app's plus 1 KiB for what the app's frames add): the server ends the connection
    # without buffering the message or passing it to the app (which would answer an error frame: wsprobe's exit 4).
    # It ends it while wsprobe still sends, so wsprobe may read the
    # close frame or be reset first: both are "closed" (exit 3).
    over = host.run(f"{wsprobe} send %s %s --timeout 20", url, "x" * (limit + 1024 - 14))
    assert over.rc == 3, over.stdout
    assert "closed" in frames(over.stdout)[0]
    roundtrip = host.check_output(f"{wsprobe} roundtrip %s", url)
    assert frames(roundtrip)[0]["service"] == service


@pytest.mark.parametrize("origin", ["http://localhost:9999", "https://localhost", "http://evil.example"])
def test_a_page_of_another_origin_cannot_open_a_websocket_and_the_sites_own_can(host, service, origin, wsprobe):
    # Through nginx, which passes the Host with its port on: another port, scheme or host is another site's page.
    url = WS.format(service=service)
    refused = host.run(f"{wsprobe} roundtrip %s --origin %s", url, origin)
    assert refused.rc == 3 and "403" in frames(refused.stdout)[0]["reason"], refused.stdout
    assert frames(host.check_output(f"{wsprobe} roundtrip %s", url))[0]["service"] == service


def test_a_client_flooding_frames_is_closed_with_4429_and_the_others_are_served(host, service, wsprobe):
    url = WS.format(service=service)
    flood = host.run(f"{wsprobe} flood %s --count 100 --timeout 10", url)
    assert flood.rc == 3 and frames(flood.stdout)[0]["closed"] == 4429, flood.stdout
    # Under the limit nothing happens to the connection.
    calm = host.run(f"{wsprobe} flood %s --count 5 --timeout 2", url)
    assert calm.rc == 0 and frames(calm.stdout)[0] == {"sent": 5}, calm.stdout
    assert frames(host.check_output(f"{wsprobe} roundtrip %s", url))[0]["service"] == service


def test_a_client_cannot_choose_the_address_the_asgi_server_logs(host, layout, service):
    # nginx passes on its peer's address ($remote_addr), not what the client put into X-Forwarded-For.
    path = f"/ws/deploy/{service}-forwarded/"
    http_get(host, path, headers={"X-Forwarded-For": "203.0.113.9"})
    logs = host.check_output("cat %s/%s-*.log", layout["log_dir"], layout["program"])
    lines = [line for line in logs.splitlines() if path in line]
    assert lines, f"no log line for {path}"
    assert not [line for line in lines if "203.0.113.9" in line], lines


def test_two_clients_receive_a_third_clients_message_and_a_manage_push(host, layout, service, wsprobe):
    url = WS.format(service=service)
    manage = f"{layout['project']}-manage"
    script = f"""
set -e
cd /tmp
for c in a b; do
  {wsprobe} listen {url} --count 2 --timeout 30 --ready-file {service}.$c.ready > {service}.$c.out &
done
for i in $(seq 100); do [ -e {service}.a.ready ] && [ -e {service}.b.ready ] && break; sleep 0.1; done
{wsprobe} send {url} from-client-{service} > /dev/null
echo pushed-{service} | {manage} push {service} -
wait
cat {service}.a.out; echo ---; cat {service}.b.out
"""
    out = host.check_output("bash -c %s", script)
    first, second = out.split("---")
    for listener in (first, second):
        messages = [(f["message"], f["source"]) for f in frames(listener)]
        assert messages == [(f"from-client-{service}", "client"), (f"pushed-{service}", "push")]


def test_asgi_process_comes_back_after_kill_9_and_serves_pushes(host, layout, service, wsprobe):
    server, manage = layout["program"], f"{layout['project']}-manage"
    before = host.check_output(f"supervisorctl pid {server}:{server}-0").strip()
    host.check_output(f"kill -9 {before}")
    for _ in range(60):
        time.sleep(0.5)
        now = host.check_output(f"supervisorctl pid {server}:{server}-0").strip()
        status = host.check_output(f"supervisorctl status {server}:{server}-0")
        if now not in ("0", before) and "RUNNING" in status:
            break
    else:
        pytest.fail(f"{server}-0 was not restarted by supervisor")
    sock = f"{layout['run_dir']}/{server}-0.sock"
    url = WS.format(service=service)
    script = f"""
set -e
cd /tmp
for i in $(seq 100); do [ -S {sock} ] && break; sleep 0.1; done
{wsprobe} listen {url} --unix {sock} --count 1 --timeout 30 --ready-file {service}.ready > {service}.out &
for i in $(seq 100); do [ -e {service}.ready ] && break; sleep 0.1; done
{manage} push {service} after-restart
wait
cat {service}.out
"""
    received = frames(host.check_output("bash -c %s", script))
    assert [f["message"] for f in received] == ["after-restart"]


def test_manage_push_rejects_a_bad_service_name(host, layout):
    out = host.run(f"{layout['project']}-manage push 'bad name!' hello")
    assert out.rc == 2
    assert re.search(r"service", out.stderr + out.stdout, re.I)


def test_twenty_rounds_of_clients_keep_receiving_pushes(host, layout, service, wsprobe):
    """Clients that come and go must not starve later ones (the channels-redis 2.3 lock defect)."""
    url = WS.format(service=service)
    manage = f"{layout['project']}-manage"
    script = f"""
set -e
cd /tmp
for round in $(seq 20); do
  for c in a b c; do
    rm -f {service}.$c.ready
    {wsprobe} listen {url} --count 1 --timeout 15 --ready-file {service}.$c.ready \
      > {service}.$round.$c.out &
  done
  for i in $(seq 150); do
    [ -e {service}.a.ready ] && [ -e {service}.b.ready ] && [ -e {service}.c.ready ] && break
    sleep 0.1
  done
  {manage} push {service} round-$round
  wait
done
cat {service}.*.out
"""
    received = [f["message"] for f in frames(host.check_output("bash -c %s", script))]
    assert sorted(received) == sorted(f"round-{r}" for r in range(1, 21) for _ in "abc")


IDLE_CLIENTS, IDLE_SECONDS = 20, 30


def test_clients_idle_for_30_seconds_on_the_core_layer_still_receive_a_push(host, layout, service, wsprobe):
    """On the core layer every idle consumer sits in a 5 s blocking read: with redis-py's default socket timeout of
    5 s the reads raced the timeout and idle clients stopped receiving (django/channels_redis #422: 4 of 20 after
    25 s). The app gives the layer's connections a longer timeout; the app tests show the failing settings."""
    if layout["layer"] != "redis":
        pytest.skip("the pub/sub layer has no per-consumer blocking read")
    url = WS.format(service=service)
    manage = f"{layout['project']}-manage"
    script = f"""
set -e
cd /tmp
for c in $(seq {IDLE_CLIENTS}); do
  {wsprobe} listen {url} --count 1 --timeout {IDLE_SECONDS + 30} --ready-file {service}.$c.ready \
    > {service}.$c.out &
done
for i in $(seq 200); do [ $(ls {service}.*.ready 2>/dev/null | wc -l) -eq {IDLE_CLIENTS} ] && break; sleep 0.1; done
sleep {IDLE_SECONDS}
{manage} push {service} after-idle
wait
cat {service}.*.out
"""
    received = [f["message"] for f in frames(host.check_output("bash -c %s", script))]
    assert received == ["after-idle"] * IDLE_CLIENTS, f"{len(received)} of {IDLE_CLIENTS} idle clients got the push"


def test_a_consumer_that_raises_is_rejected_fast_and_logged(host, layout, service, wsprobe):
    """With Redis down, group_add raises in connect(): the client must be turned away at once, and the
    error logged (the CancelledError defect of the legacy pins left it hanging with nothing logged)."""
    logs = f"{layout['log_dir']}/{layout['program']}-[0-9].log"
    marker = {"daphne": "Exception inside application", "uvicorn": "Exception in ASGI application"}[layout["server"]]
    errors = f"cat {logs} | grep -c '{marker}' || true"
    before = int(host.check_output(errors))
    host.check_output("systemctl stop redis-server")
    try:
        started = time.monotonic()
        out = host.run(f"{wsprobe} roundtrip %s --timeout 20", WS.format(service=service))
        elapsed = time.monotonic() - started
    finally:
        host.check_output("systemctl start redis-server")
    assert out.rc != 0, out.stdout
    assert elapsed < 10, f"rejection took {elapsed:.1f}s"
    # supervisor writes the server's output to the log a moment after the handshake was refused.
    for _ in range(20):
        if int(host.check_output(errors)) > before:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{layout['server']} logged no exception for the refused client")
