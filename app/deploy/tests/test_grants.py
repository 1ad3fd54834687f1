"""Who may read and send (deploy.grants): the tokens, the consumer's checks, the page's grant view
and ``manage.py grant``. Each refusal is checked together with a client that kept being served,
and the ``open`` mode shows what happens without grants."""

import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError

from deploy import grants
from deploy.consumers import NOT_GRANTED, TOO_MANY_BAD_FRAMES
from deploy.push import send_channel_msg
from deploy.tests.conftest import SITE_HEADERS, TIMEOUT
from deploy.tests.helpers import grant_protocols
from deploy.tests.test_metrics import value
from devops.asgi import application


async def open_socket(service, protocols):
    """A communicator that offered ``protocols``: (communicator, accepted, selected subprotocol)."""
    client = WebsocketCommunicator(
        application, f"/ws/deploy/{service}/", headers=list(SITE_HEADERS), subprotocols=protocols
    )
    accepted, subprotocol = await client.connect(timeout=TIMEOUT)
    return client, accepted, subprotocol


async def closed_with(client):
    """The close code the server sent right away, and no message before it."""
    output = await client.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"]


# --- Tokens ----------------------------------------------------------------------------------


def test_a_grant_opens_its_service_until_it_expires():
    token = grants.issue("tasks", write=True, seconds=60, now=1000)
    grant = grants.verify(token, "tasks", now=1059)
    assert (grant.pattern, grant.write, grant.expires) == ("tasks", True, 1060)
    with pytest.raises(grants.Refused, match="expired"):
        grants.verify(token, "tasks", now=1060)


def test_a_grant_is_for_its_services_only():
    assert grants.verify(grants.issue("web-*"), "web-1").pattern == "web-*"
    for other in ("tasks", "web", "xweb-1"):
        with pytest.raises(grants.Refused, match="for 'web-\\*'"):
            grants.verify(grants.issue("web-*"), other)


def test_a_changed_or_foreign_grant_is_refused(settings):
    token = grants.issue("tasks")
    payload, _, signature = token.rpartition(".")
    forged_payload = grants._b64encode(json.dumps({"s": "*", "w": 1, "e": 2**40}).encode())
    for forged in (f"{forged_payload}.{signature}", token[:-2] + "xx", "x" * 40, "a.b.c"):
        with pytest.raises(grants.Refused):
            grants.verify(forged, "tasks")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    with pytest.raises(grants.Refused, match="signature"):
        grants.verify(token, "tasks")


def test_no_grant_is_refused():
    with pytest.raises(grants.Refused, match="no grant"):
        grants.verify(None, "tasks")


@pytest.mark.parametrize("pattern", ["", "a b", "x" * 65, "tasks/../x", "a?", "[a]"])
def test_bad_patterns_are_not_signed(pattern):
    with pytest.raises(grants.InvalidInput, match="invalid service pattern"):
        grants.issue(pattern)


@pytest.mark.parametrize("seconds", [0, -5, grants.MAX_SECONDS + 1])
def test_lifetimes_out_of_range_are_refused(seconds):
    with pytest.raises(grants.InvalidInput, match="seconds"):
        grants.issue("tasks", seconds=seconds)


def test_a_grant_is_a_valid_subprotocol_name():
    token = grants.issue("web-*.prod_1", write=True)
    # RFC 6455 subprotocols are RFC 7230 tokens: these characters only.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


# --- The consumer ------------------------------------------------------------------------------


async def test_without_a_valid_grant_nothing_is_read_and_the_others_are_served(connect):
    reader = await connect("tasks", write=False)
    refused = value("deploy_websockets_refused_total", reason="grant")
    expired = grants.issue("tasks", seconds=1, now=time.time() - 10)
    attempts = {
        "none": [],
        "only the protocol": ["deploy"],
        "expired": ["deploy", f"grant.{expired}"],
        "another service": grant_protocols("other"),
        "forged": ["deploy", "grant." + grants.issue("tasks")[:-4] + "AAAA"],
    }
    for name, protocols in attempts.items():
        client, accepted, selected = await open_socket("tasks", protocols)
        assert accepted, (
            name
        )  # then closed: the client learns why (a refused handshake says nothing)
        assert selected == ("deploy" if "deploy" in protocols else None), name
        await sync_to_async(send_channel_msg)("tasks", f"not for {name}")
        assert await closed_with(client) == NOT_GRANTED, name
        assert (await reader.receive_json_from(timeout=TIMEOUT))["message"] == f"not for {name}"
    assert value("deploy_websockets_refused_total", reason="grant") == refused + len(attempts)


async def test_a_valid_grant_reads_and_the_server_selects_the_deploy_subprotocol():
    client, accepted, selected = await open_socket("tasks", grant_protocols("tasks", write=False))
    assert (accepted, selected) == (True, "deploy")
    await sync_to_async(send_channel_msg)("tasks", "for the reader")
    frames = [await client.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
    assert "for the reader" in [frame.get("message") for frame in frames]
    await client.disconnect()


async def test_a_read_only_grant_cannot_send_and_the_others_do_not_see_it(connect, settings):
    reader, writer = await connect("tasks", write=False), await connect("tasks")
    refused = value("deploy_frames_refused_total", reason="read_only")
    await reader.send_json_to({"message": "forged broadcast"})
    error = await reader.receive_json_from(timeout=TIMEOUT)
    assert error == {"type": "error", "error": "this connection may not send to tasks"}
    assert value("deploy_frames_refused_total", reason="read_only") == refused + 1
    await writer.send_json_to({"message": "allowed"})
    for client in (reader, writer):
        assert (await client.receive_json_from(timeout=TIMEOUT))["message"] == "allowed"
    # Refused frames count as bad ones: a client that keeps trying is closed.
    for _ in range(settings.DEPLOY_CLIENT_BAD_FRAMES - 1):
        await reader.send_json_to({"message": "again"})
        await reader.receive_json_from(timeout=TIMEOUT)
    assert await closed_with(reader) == TOO_MANY_BAD_FRAMES


async def test_only_the_listed_services_take_frames_from_clients(connect, settings):
    settings.DEPLOY_CLIENT_WRITE_SERVICES = ["chat", "team-*"]
    for service, allowed in (("chat", True), ("team-a", True), ("tasks", False), ("chatx", False)):
        client = await connect(service)  # a grant that may send
        await client.send_json_to({"message": "hi"})
        frame = await client.receive_json_from(timeout=TIMEOUT)
        assert (frame["type"] == "message") is allowed, (service, frame)


async def test_open_access_lets_anyone_read_and_send_to_the_listed_services(settings):
    """The unprotected case: what a client without any grant gets once access is open."""
    settings.DEPLOY_WEBSOCKET_ACCESS = "open"
    settings.DEPLOY_CLIENT_WRITE_SERVICES = ["tasks"]
    anonymous, accepted, selected = await open_socket("tasks", [])
    other, _, _ = await open_socket("tasks", [])
    assert (accepted, selected) == (True, None)
    if (await anonymous.receive_json_from(timeout=TIMEOUT))["type"] == "hello":
        await other.receive_json_from(timeout=TIMEOUT)
    await anonymous.send_json_to({"message": "anyone can broadcast"})
    assert (await other.receive_json_from(timeout=TIMEOUT))["message"] == "anyone can broadcast"
    await anonymous.disconnect()
    await other.disconnect()


# --- The page's grant view ---------------------------------------------------------------------


def grant_of(client, service="tasks"):
    response = client.get(f"/deploy/{service}/grant/", HTTP_HOST="localhost")
    return response.status_code, response.json(), response


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ops", password="a long test password")


def give(user, *codenames):
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="deploy", codename__in=codenames)
    )


@pytest.mark.django_db
def test_a_visitor_who_is_not_signed_in_gets_no_grant(client):
    status, body, response = grant_of(client)
    assert status == 401 and body == {"error": "sign in to read this service"}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_a_user_without_the_read_permission_gets_no_grant(client, user):
    client.force_login(user)
    status, body, _ = grant_of(client)
    assert status == 403 and body == {"error": "ops may not read deploy messages"}


@pytest.mark.django_db
def test_a_reader_gets_a_grant_for_the_service_that_may_not_send(client, user):
    give(user, "read_stream")
    client.force_login(user)
    status, body, response = grant_of(client, "web-1")
    assert status == 200 and body["write"] is False
    grant = grants.verify(body["grant"], "web-1")
    assert grant.pattern == "web-1" and not grant.write
    assert "no-store" in response["Cache-Control"]
    with pytest.raises(grants.Refused):
        grants.verify(body["grant"], "web-2")


@pytest.mark.django_db
def test_a_writer_may_send_only_where_clients_may(client, user, settings):
    give(user, "read_stream", "write_stream")
    client.force_login(user)
    settings.DEPLOY_CLIENT_WRITE_SERVICES = ["chat"]
    assert grant_of(client, "chat")[1]["write"] is True
    assert grant_of(client, "tasks")[1]["write"] is False


@pytest.mark.django_db
def test_with_open_access_the_page_needs_no_grant(client, settings):
    settings.DEPLOY_WEBSOCKET_ACCESS = "open"
    settings.DEPLOY_CLIENT_WRITE_SERVICES = []
    assert grant_of(client)[:2] == (200, {"grant": None, "write": False})


@pytest.mark.django_db
def test_a_bad_service_name_gets_404(client):
    assert grant_of(client, "bad%20name")[0] == 404


@pytest.mark.django_db
def test_the_page_offers_to_sign_in_and_signs_in(client, user):
    page = client.get("/deploy/tasks/", HTTP_HOST="localhost").content.decode()
    assert 'href="/accounts/login/?next=/deploy/tasks/"' in page
    assert 'data-grant-url="/deploy/tasks/grant/"' in page
    login = client.get("/accounts/login/?next=/deploy/tasks/", HTTP_HOST="localhost")
    assert login.status_code == 200
    response = client.post(
        "/accounts/login/",
        {"username": "ops", "password": "a long test password", "next": "/deploy/tasks/"},
        HTTP_HOST="localhost",
    )
    assert (response.status_code, response["Location"]) == (302, "/deploy/tasks/")
    assert (
        "Signed in as ops" in client.get("/deploy/tasks/", HTTP_HOST="localhost").content.decode()
    )


# --- manage.py grant ---------------------------------------------------------------------------


def test_the_command_prints_a_grant(capsys):
    call_command("grant", "deploy-*", "--write", "--seconds", "120")
    grant = grants.verify(capsys.readouterr().out.strip(), "deploy-web")
    assert grant.write and grant.expires - time.time() == pytest.approx(120, abs=5)


def test_the_command_grants_an_hour_to_read_by_default(capsys):
    call_command("grant", "tasks")
    grant = grants.verify(capsys.readouterr().out.strip(), "tasks")
    assert not grant.write and grant.expires - time.time() == pytest.approx(3600, abs=5)


@pytest.mark.parametrize("args", [["bad name"], ["tasks", "--seconds", "0"]])
def test_the_command_refuses_bad_input(args):
    with pytest.raises(CommandError) as error:
        call_command("grant", *args)
    assert error.value.returncode == 2
