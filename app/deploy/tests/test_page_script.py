"""The page's script, run by Node.js against a fake DOM and WebSocket (page_harness.js)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

NODE = shutil.which("node")
HARNESS = Path(__file__).with_name("page_harness.js")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def run_page(protocol, host="deploy.example.org", service="tasks", scenario="basic"):
    script = finders.find("deploy/deploy.js")
    result = subprocess.run(
        [NODE, str(HARNESS), script, protocol, host, service, scenario],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("protocol, scheme", [("https:", "wss:"), ("http:", "ws:")])
def test_socket_scheme_follows_page_protocol(protocol, scheme):
    page = run_page(protocol, host="deploy.example.org:8443", service="web-1.prod")
    assert page["urls"] == [f"{scheme}//deploy.example.org:8443/ws/deploy/web-1.prod/"]


def test_messages_are_shown_as_text():
    page = run_page("https:")
    assert page["lines"] == [
        {"className": "push", "text": "#1 2026-01-02 03:04:05 <img src=x onerror=alert(1)>"},
        {"className": "error", "text": "error frame is not valid JSON"},
        {"className": "error", "text": "unreadable frame from the server"},
    ]


def test_user_can_send_a_line():
    page = run_page("https:")
    assert page["sent"] == ['{"message":"hello"}']
    assert page["inputCleared"]


def test_connection_state_is_shown():
    page = run_page("https:")
    assert page["states"][:2] == ["connecting", "connected"]
    assert all(state.startswith("reconnecting in ") for state in page["states"][2:])
    assert page["finalState"] == "closed: invalid service name"


def test_reconnects_with_capped_jittered_backoff():
    page = run_page("https:")
    delays = page["delays"]
    assert page["socketsOpened"] == 11
    ceilings = [min(30000, 500 * 2**attempt) for attempt in range(10)]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings))
    assert len(set(delays)) > 1  # jitter: ten random delays are not all equal


def test_invalid_service_close_stops_reconnecting():
    assert run_page("https:")["timersAfter4400"] == 0


def test_service_field_opens_that_services_page():
    assert run_page("http:")["assigned"] == ["/deploy/other%20svc/"]


# The resume scenario of page_harness.js: positions, duplicates, resumed/gap lines, drains.


@pytest.fixture(scope="module")
def resumed_page():
    return run_page("https:", scenario="resume")


def test_reconnects_from_the_position(resumed_page):
    base = "wss://deploy.example.org/ws/deploy/tasks/"
    assert resumed_page["urls"][:4] == [
        base,
        base + "?after=1700000000000-10&epoch=E1",
        base + "?after=1700000000001-0&epoch=E1",
        base + "?after=5-0&epoch=E2%26x%3D1",
    ]


def test_messages_at_or_below_the_position_are_dropped(resumed_page):
    shown = [re.sub(r"^#\d+ \S+ \S+ ", "", line["text"]) for line in resumed_page["lines"]]
    assert shown == [
        "nine",
        "ten",
        "recovered",
        "recovered 2 messages",
        "new epoch",
        "some messages were missed",
        "no id",
        "no id",
    ]


def test_resumed_and_gap_lines_have_their_own_class(resumed_page):
    classes = {line["text"]: line["className"] for line in resumed_page["lines"]}
    assert classes["recovered 2 messages"] == "recovered"
    assert classes["some messages were missed"] == "gap"


def test_drain_close_reconnects_within_a_second_without_backoff(resumed_page):
    drains = resumed_page["drainDelays"]
    assert len(drains) == 11
    assert all(0 <= delay <= 1000 for delay in drains)
    assert len(set(drains)) > 1
    # The ordinary backoff starts from its first step after the drains.
    assert 0 <= resumed_page["delays"][0] <= 500


def test_offers_the_grant_it_was_given_as_a_subprotocol():
    page = run_page("https:", scenario="read-only")
    assert page["fetches"] == [
        {"url": "/deploy/tasks/grant/", "credentials": "same-origin", "cache": "no-store"}
    ]
    assert page["protocols"] == [["deploy", "grant.TOKEN.sig"]]
    assert page["sendFormHidden"] is True  # the grant may not send


def test_offers_no_subprotocol_when_websockets_are_open():
    page = run_page("https:", scenario="open")
    assert page["protocols"] == [[]]
    assert page["sendFormHidden"] is False


def test_every_connection_asks_for_a_fresh_grant():
    page = run_page("https:")  # basic: ten reconnects after the first connection
    assert len(page["fetches"]) == page["socketsOpened"] == 11


def test_a_visitor_who_is_not_signed_in_is_told_so_and_nothing_is_retried():
    page = run_page("https:", scenario="signed-out")
    assert page["protocols"] == []
    assert page["states"] == ["closed: sign in to read this service"]
    assert page["timersLeft"] == 0


def test_a_failed_grant_request_is_retried_with_backoff():
    page = run_page("https:", scenario="grant-error")
    assert page["states"][0].startswith("reconnecting in ")
    assert len(page["fetches"]) == 2
    assert page["protocols"] == [["deploy", "grant.T2.sig"]]
