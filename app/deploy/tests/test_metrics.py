"""The app's metrics (deploy.metrics): what each entry point counts, and the multiprocess files."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from deploy.push import send_channel_msg
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import APP_DIR, manage
from devops.asgi import application


def value(name, **labels):
    """The metric's value in this process (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def samples(text):
    """``{(name, frozenset(labels)): value}`` of a scrape."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# What the consumer, the push entry points and the middleware count.


async def test_open_websockets_are_counted_per_service(connect):
    before = value("deploy_websockets_open", service="counted")
    clients = [await connect("counted") for _ in range(3)]
    assert value("deploy_websockets_open", service="counted") == before + 3
    await clients[0].disconnect()
    assert value("deploy_websockets_open", service="counted") == before + 2


async def test_refused_handshakes_and_frames_are_counted_by_reason(connect):
    origin = value("deploy_websockets_refused_total", reason="origin")
    headers = [(b"origin", b"http://evil"), (b"host", b"localhost")]
    evil = WebsocketCommunicator(application, "/ws/deploy/tasks/", headers=headers)
    connected, _ = await evil.connect(timeout=TIMEOUT)
    assert not connected
    assert value("deploy_websockets_refused_total", reason="origin") == origin + 1

    invalid = value("deploy_frames_refused_total", reason="invalid")
    client = await connect("tasks")
    await client.send_to(text_data="not json")
    assert (await client.receive_json_from(timeout=TIMEOUT))["type"] == "error"
    assert value("deploy_frames_refused_total", reason="invalid") == invalid + 1


async def test_a_client_push_counts_once_and_each_delivery_once(connect):
    pushes = value("deploy_pushes_total", entry_point="client")
    live = value("deploy_deliveries_total", kind="live")
    latency = value("deploy_delivery_latency_seconds_count")
    sender, other = await connect("fanout"), await connect("fanout")
    await sender.send_json_to({"message": "hello"})
    for client in (sender, other):
        assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "hello"
    assert value("deploy_pushes_total", entry_point="client") == pushes + 1
    assert value("deploy_deliveries_total", kind="live") == live + 2
    assert value("deploy_delivery_latency_seconds_count") == latency + 2


async def test_pushes_from_python_count_under_their_entry_point(connect):
    client = await connect("tasks")
    function = value("deploy_pushes_total", entry_point="function")
    await sync_to_async(send_channel_msg)("tasks", "from a script")
    await client.receive_json_from(timeout=TIMEOUT)
    assert value("deploy_pushes_total", entry_point="function") == function + 1


def test_http_pushes_count_under_http_and_requests_are_timed_by_view(client, settings):
    settings.DEPLOY_PUSH_TOKEN = "s3cret-token"
    http = value("deploy_pushes_total", entry_point="http")
    timed = value("deploy_http_request_duration_seconds_count", view="push", status="2xx")
    auth = {"HTTP_AUTHORIZATION": "Bearer s3cret-token"}
    response = client.post("/api/push/tasks/", "hi", content_type="text/plain", **auth)
    assert response.status_code == 202
    assert value("deploy_pushes_total", entry_point="http") == http + 1
    count = value("deploy_http_request_duration_seconds_count", view="push", status="2xx")
    assert count == timed + 1

    missing = value("deploy_http_request_duration_seconds_count", view="unresolved", status="4xx")
    assert client.get("/no/such/page/").status_code == 404
    count = value("deploy_http_request_duration_seconds_count", view="unresolved", status="4xx")
    assert count == missing + 1


class RefusingLayer(InMemoryChannelLayer):
    """A channel layer that cannot reach its server."""

    async def group_send(self, group, message):
        raise ConnectionError("the layer is down")


def test_a_push_the_layer_refuses_counts_as_a_layer_error(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.RefusingLayer"}}
    errors = value("deploy_layer_errors_total", operation="push")
    pushes = value("deploy_pushes_total", entry_point="function")
    with pytest.raises(ConnectionError):
        send_channel_msg("tasks", "nowhere to go")
    assert value("deploy_layer_errors_total", operation="push") == errors + 1
    assert value("deploy_pushes_total", entry_point="function") == pushes


def test_service_labels_are_capped(monkeypatch):
    from deploy import metrics

    monkeypatch.setattr(metrics, "_services", {f"s{n}" for n in range(metrics.MAX_SERVICES)})
    assert metrics.service_label("s1") == "s1"
    assert metrics.service_label("one-more") == metrics.OTHER


def test_the_metrics_page_serves_the_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"deploy_websockets_open", "deploy_pushes", "deploy_delivery_latency_seconds"} <= names


# Multiprocess mode: processes that write to PROMETHEUS_MULTIPROC_DIR, and the page adding them up.

WORKER = """
import os, sys, time
from deploy import metrics
metrics.PUSHES.labels("http").inc(int(sys.argv[1]))
metrics.WEBSOCKETS_OPEN.labels("tasks").inc(int(sys.argv[2]))
metrics.DELIVERY_LATENCY.observe(0.02)
print("ready", flush=True)
if sys.argv[3] == "wait":
    time.sleep(60)
"""


@pytest.fixture
def multiproc_dir(tmp_path):
    directory = tmp_path / "metrics"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(APP_DIR)}

    def run(pushes, websockets, wait=False):
        """A process that counts pushes and open websockets; killed by the test when ``wait``."""
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(pushes), str(websockets)]
            + ["wait" if wait else "exit"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline() == "ready\n"
        if not wait:
            assert process.wait(timeout=30) == 0
        return process

    def scrape():
        """What /metrics answers, from a process of its own."""
        code = "from deploy import metrics; print(metrics.collect().decode())"
        command = [sys.executable, "-c", code]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return samples(result.stdout)

    run.scrape, run.directory = scrape, directory
    return run


def test_exited_processes_are_merged_and_their_counts_kept(multiproc_dir):
    multiproc_dir(2, 0)
    multiproc_dir(3, 0)
    assert len(list(multiproc_dir.directory.glob("counter_*.db"))) == 2
    scraped = multiproc_dir.scrape()
    assert scraped[("deploy_pushes_total", frozenset({("entry_point", "http")}))] == 5
    assert scraped[("deploy_delivery_latency_seconds_count", frozenset())] == 2
    assert scraped[("deploy_delivery_latency_seconds_bucket", frozenset({("le", "0.025")}))] == 2
    # One file per type for all exited processes; what is left is the scraping process' own.
    names = {path.name for path in multiproc_dir.directory.glob("*.db")}
    assert {"counter_archive.db", "histogram_archive.db"} <= names
    assert len({name.rsplit("_", 1)[1] for name in names} - {"archive.db"}) == 1
    multiproc_dir(1, 0)
    again = multiproc_dir.scrape()
    assert again[("deploy_pushes_total", frozenset({("entry_point", "http")}))] == 6
    assert again[("deploy_delivery_latency_seconds_count", frozenset())] == 3
    assert again[("deploy_delivery_latency_seconds_bucket", frozenset({("le", "0.01")}))] == 0


def test_a_killed_process_websockets_stop_counting(multiproc_dir):
    running = multiproc_dir(1, 5, wait=True)
    open_tasks = ("deploy_websockets_open", frozenset({("service", "tasks")}))
    try:
        assert multiproc_dir.scrape()[open_tasks] == 5
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=30)
    # prometheus_client's collector alone still counts the dead process' websockets...
    plain = CollectorRegistry()
    multiprocess.MultiProcessCollector(plain, path=str(multiproc_dir.directory))
    assert samples(generate_latest(plain).decode())[open_tasks] == 5
    # ...the app's page does not, and keeps its push.
    scraped = multiproc_dir.scrape()
    assert scraped.get(open_tasks, 0) == 0
    assert scraped[("deploy_pushes_total", frozenset({("entry_point", "http")}))] == 1


def test_the_push_command_counts_in_the_shared_directory(multiproc_dir, tmp_path):
    result = manage(
        "push", "tasks", "from the command",
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir.directory), "CHANNEL_LAYER": "memory"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scraped = multiproc_dir.scrape()
    assert scraped[("deploy_pushes_total", frozenset({("entry_point", "command")}))] == 1
