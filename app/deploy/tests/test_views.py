"""The HTTP side: push endpoint, health probes and the page."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer

from deploy import health
from deploy.tests.conftest import TIMEOUT
from deploy.tests.helpers import free_port

TOKEN = "s3cret-token"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def unreachable_redis_layer():
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }


class HangingLayer(InMemoryChannelLayer):
    """A layer whose receive() never returns, like Redis behind a dead network."""

    async def receive(self, channel):
        await asyncio.Event().wait()


@pytest.fixture
def push_on(settings):
    settings.DEPLOY_PUSH_TOKEN = TOKEN


def post_json(client, body, service="tasks", **extra):
    return client.post(
        f"/api/push/{service}/", json.dumps(body), content_type="application/json", **extra
    )


# Push endpoint.


def test_push_endpoint_is_off_without_token(client):
    response = post_json(client, {"message": "hi"}, **AUTH)
    assert response.status_code == 404
    assert "DEPLOY_PUSH_TOKEN" in response.json()["error"]


@pytest.mark.usefixtures("push_on")
@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_push_endpoint_needs_the_token(client, headers):
    response = post_json(client, {"message": "hi"}, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.usefixtures("push_on")
def test_push_endpoint_only_takes_post(client):
    response = client.get("/api/push/tasks/", **AUTH)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


@pytest.mark.usefixtures("push_on")
async def test_push_endpoint_json_is_delivered(client, connect):
    listener = await connect("tasks")
    response = await sync_to_async(post_json)(client, {"message": "from CI"}, **AUTH)
    assert response.status_code == 202
    assert response.json() == {"status": "pushed", "service": "tasks"}
    frame = await listener.receive_json_from(timeout=TIMEOUT)
    assert (frame["message"], frame["source"]) == ("from CI", "push")


@pytest.mark.usefixtures("push_on")
async def test_push_endpoint_plain_text_is_delivered(client, connect):
    listener = await connect("tasks")
    response = await sync_to_async(client.post)(
        "/api/push/tasks/", "plain line\n", content_type="text/plain; charset=utf-8", **AUTH
    )
    assert response.status_code == 202
    assert (await listener.receive_json_from(timeout=TIMEOUT))["message"] == "plain line"


@pytest.mark.usefixtures("push_on")
@pytest.mark.parametrize(
    "service, content_type, body, error",
    [
        ("tasks", "application/json", "{not json", "not valid JSON"),
        ("tasks", "application/json", '["hi"]', "JSON body must be an object"),
        ("tasks", "application/json", '{"text": "hi"}', "JSON body must be an object"),
        ("tasks", "application/json", '{"message": 3}', "must be a string"),
        ("tasks", "application/json", '{"message": ""}', "empty"),
        ("tasks", "application/json", '{"message": "\\ud800"}', "lone surrogate"),
        ("tasks", "application/json", "[" * 30000, "nested too deeply"),
        ("tasks", "text/plain", "\n", "empty"),
        ("tasks", "application/x-www-form-urlencoded", "message=hi", "application/json or"),
        ("bad%20name", "application/json", '{"message": "hi"}', "invalid service name"),
    ],
)
def test_push_endpoint_bad_input_is_400(client, service, content_type, body, error):
    response = client.post(f"/api/push/{service}/", body, content_type=content_type, **AUTH)
    assert response.status_code == 400
    assert error in response.json()["error"]


@pytest.mark.usefixtures("push_on")
def test_push_endpoint_oversize_is_413(client, settings):
    settings.DEPLOY_MAX_MESSAGE_BYTES = 10
    response = post_json(client, {"message": "x" * 11}, **AUTH)
    assert response.status_code == 413


@pytest.mark.usefixtures("push_on")
def test_push_endpoint_body_over_upload_limit_is_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = post_json(client, {"message": "x" * 200}, **AUTH)
    assert response.status_code == 413


@pytest.mark.usefixtures("push_on")
def test_push_endpoint_unreachable_layer_is_503(client, settings):
    settings.CHANNEL_LAYERS = unreachable_redis_layer()
    response = post_json(client, {"message": "hi"}, **AUTH)
    assert response.status_code == 503


# Health probes.


def test_healthz_needs_neither_database_nor_layer(client, settings):
    # No django_db mark: a query would fail the test. The layer points nowhere.
    settings.CHANNEL_LAYERS = unreachable_redis_layer()
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok"},
    }


@pytest.mark.django_db
def test_readyz_503_when_layer_is_down(client, settings, caplog):
    settings.CHANNEL_LAYERS = unreachable_redis_layer()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "channel_layer": "error"}
    assert "channel_layer check failed" in caplog.text


@pytest.mark.django_db
def test_readyz_503_when_layer_hangs(client, settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.HangingLayer"}}
    monkeypatch.setattr(health, "LAYER_TIMEOUT", 0.2)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"] == "error"


def test_readyz_503_when_database_is_down(client):
    # Without the django_db mark every query raises, as with a dead database.
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "error", "channel_layer": "ok"}


def test_probes_are_exempt_from_ssl_redirect(client, settings, monkeypatch):
    settings.SECURE_SSL_REDIRECT = True
    monkeypatch.setitem(health.CHECKS, "database", lambda: None)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (301, "https://testserver/")


# The page.


@pytest.mark.parametrize("path, service", [("/", "tasks"), ("/deploy/web-1.prod/", "web-1.prod")])
def test_page_names_its_service(client, path, service):
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-service="{service}"' in html
    assert 'id="service-name"' in html
    assert "/static/deploy/deploy.js" in html
    assert "/static/deploy/deploy.css" in html


def test_page_of_invalid_service_is_404(client):
    assert client.get("/deploy/bad%20name/").status_code == 404
