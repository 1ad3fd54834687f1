"""Who may read and send on the deployed stack (the bundled app's grants, deploy.grants): through nginx from inside
each host, every refusal checked together with a client that kept being served. The app's own tests show the
unprotected case (DEPLOY_WEBSOCKET_ACCESS=open: anyone reads and sends).
"""

import time

from helpers import PROBE, WS, frames, grant_for, http_get, listen_and_push


def test_a_websocket_without_a_valid_grant_is_closed_with_4403_and_the_others_are_served(host, layout, service):
    url = WS.format(service=service)
    expired = grant_for(host, layout, service, "--seconds 1")
    other = grant_for(host, layout, "t-other-*")
    forged = grant_for(host, layout, service)[:-4] + "AAAA"
    time.sleep(1.5)
    attempts = {
        "none": f"{PROBE} listen {url} --count 1 --timeout 10",
        "expired": f"WSPROBE_GRANT={expired} {PROBE} listen {url} --count 1 --timeout 10",
        "another service": f"WSPROBE_GRANT={other} {PROBE} listen {url} --count 1 --timeout 10",
        "forged": f"WSPROBE_GRANT={forged} {PROBE} listen {url} --count 1 --timeout 10",
    }
    results, received = listen_and_push(host, layout, service, grant_for(host, layout, service), *attempts.values())
    for name, result in zip(attempts, results):
        assert result.rc == 3 and frames(result.stdout) == [{"closed": 4403, "reason": ""}], (name, result.stdout)
    assert [frame["message"] for frame in received] == ["served"]


def test_a_read_grant_cannot_send_and_nobody_receives_what_it_tried(host, layout, service):
    url = WS.format(service=service)
    reader = grant_for(host, layout, service)
    results, received = listen_and_push(
        host, layout, service, reader, f"WSPROBE_GRANT={reader} {PROBE} send {url} forged --timeout 10"
    )
    assert results[0].rc == 4, results[0].stdout
    assert frames(results[0].stdout) == [{"refused": f"this connection may not send to {service}"}]
    assert [frame["message"] for frame in received] == ["served"]  # not "forged"
    # Each refused frame counts as a bad one: a client that keeps trying is closed (4008, through the ASGI server).
    keeps_trying = host.run(f"WSPROBE_GRANT={reader} {PROBE} flood %s --count 12 --timeout 10", url)
    assert keeps_trying.rc == 3 and frames(keeps_trying.stdout)[0]["closed"] == 4008, keeps_trying.stdout


def test_only_the_listed_services_take_frames_from_clients(host, layout):
    service = "ro-" + time.strftime("%H%M%S")  # not in the scenario's app_client_write_services (t-*, smoke)
    writer = grant_for(host, layout, service, "--write")
    refused = host.run(f"WSPROBE_GRANT={writer} {PROBE} roundtrip %s --timeout 10", WS.format(service=service))
    assert refused.rc == 4 and frames(refused.stdout) == [{"refused": f"this connection may not send to {service}"}]
    listed = grant_for(host, layout, "t-listed", "--write")
    allowed = host.run(f"WSPROBE_GRANT={listed} {PROBE} roundtrip %s --timeout 10", WS.format(service="t-listed"))
    assert allowed.rc == 0, allowed.stdout


def test_grants_stay_out_of_the_access_logs(host, layout, service, wsprobe, grant):
    host.check_output(f"{wsprobe} roundtrip %s", WS.format(service=service))
    time.sleep(1)  # the servers log the disconnection a moment later
    logs = host.check_output("cat /var/log/nginx/access.log %s/%s-*.log", layout["log_dir"], layout["program"])
    assert f"/ws/deploy/{service}/" in logs
    assert grant.rpartition(".")[2] not in logs


def test_the_page_gets_a_grant_only_for_a_signed_in_user(host, service):
    status, headers, body = http_get(host, f"/deploy/{service}/grant/")
    assert status == 401 and "sign in" in body, body
    assert "no-store" in headers.get("Cache-Control", ""), headers
    status, _, page = http_get(host, f"/deploy/{service}/")
    assert status == 200 and f'href="/accounts/login/?next=/deploy/{service}/"' in page
    assert http_get(host, "/accounts/login/")[0] == 200
