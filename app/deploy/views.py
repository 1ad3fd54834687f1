"""HTTP views: the page and its grant, the health probes and the push endpoint."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from deploy import grants, health, metrics
from deploy.protocol import InvalidInput, MessageTooLarge, loads, validate_service
from deploy.push import send_channel_msg

logger = logging.getLogger(__name__)

DEFAULT_SERVICE = "tasks"


def index(request):
    return page(request, DEFAULT_SERVICE)


def service_page(request, service):
    try:
        validate_service(service)
    except InvalidInput as exc:
        raise Http404(str(exc)) from None
    return page(request, service)


def page(request, service):
    context = {
        "service": service,
        "user": request.user,
        "login_url": settings.LOGIN_URL,
        "path": request.path,
    }
    return render(request, "deploy/index.html", context)


@never_cache
def grant(request, service):
    """``GET /deploy/<service>/grant/``: the page's grant for its websocket (``deploy.grants``).

    ``{"grant": "<token>" or null, "write": bool}``: null when websockets are open to anyone;
    401 for a visitor who is not signed in, 403 without the ``deploy.read_stream`` permission.
    """
    try:
        validate_service(service)
    except InvalidInput as exc:
        return error(404, str(exc))
    may_send = grants.clients_may_send(service)
    if settings.DEPLOY_WEBSOCKET_ACCESS == "open":
        return JsonResponse({"grant": None, "write": may_send})
    user = request.user
    if not user.is_authenticated:
        response = error(401, "sign in to read this service")
        response["WWW-Authenticate"] = 'Session realm="deploy"'
        return response
    if not user.has_perm("deploy.read_stream"):
        return error(403, f"{user.get_username()} may not read deploy messages")
    write = may_send and user.has_perm("deploy.write_stream")
    return JsonResponse({"grant": grants.issue(service, write=write), "write": write})


def healthz(request):
    """Liveness: the process answers. Touches neither the database nor the channel layer."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Readiness: 200 when the database and the channel layer work, else 503."""
    ok, checks = health.run_checks()
    return JsonResponse(
        {"status": "ok" if ok else "error", "checks": checks}, status=200 if ok else 503
    )


def metrics_view(request):
    """The app's metrics in Prometheus' text format, over every process (``deploy.metrics``).

    nginx lets only the host itself reach it (``nginx_private_paths``), and the monitoring hosts
    on a listener of its own (``nginx_metrics_listen``).
    """
    return HttpResponse(metrics.collect(), content_type=metrics.CONTENT_TYPE)


def error(status, message):
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
def push(request, service):
    """``POST /api/push/<service>/`` with ``Authorization: Bearer <DEPLOY_PUSH_TOKEN>``.

    The body is JSON ``{"message": "..."}`` or, as ``text/plain``, the message itself.
    Answers 202 once the message is handed to the channel layer.
    """
    token = settings.DEPLOY_PUSH_TOKEN
    if not token:
        return error(404, "the push endpoint is off: DEPLOY_PUSH_TOKEN is not set")
    if request.method != "POST":
        response = error(405, "use POST")
        response["Allow"] = "POST"
        return response
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not constant_time_compare(given.strip(), token):
        response = error(401, "missing or wrong bearer token")
        response["WWW-Authenticate"] = 'Bearer realm="push"'
        return response
    try:
        send_channel_msg(service, read_message(request), entry_point="http")
    except MessageTooLarge as exc:
        return error(413, str(exc))
    except InvalidInput as exc:
        return error(400, str(exc))
    except RequestDataTooBig:
        return error(413, "request body too large")
    except Exception as exc:
        logger.warning("push to %s failed: %s: %s", service, type(exc).__name__, exc)
        return error(503, "channel layer unavailable")
    logger.info("pushed a message to %s over HTTP", service)
    return JsonResponse({"status": "pushed", "service": service}, status=202)


def read_message(request):
    """The message of a push request body; raises ``InvalidInput`` for a bad body."""
    if request.content_type == "application/json":
        try:
            body = loads(request.body.decode("utf-8"))
        except InvalidInput:
            raise
        except ValueError:
            raise InvalidInput("body is not valid JSON") from None
        if not isinstance(body, dict) or "message" not in body:
            raise InvalidInput('JSON body must be an object like {"message": "..."}')
        return body["message"]
    if request.content_type == "text/plain":
        try:
            return request.body.decode(request.encoding or "utf-8").rstrip("\n")
        except (LookupError, UnicodeDecodeError):
            raise InvalidInput("body is not text in its declared charset") from None
    raise InvalidInput("send application/json or text/plain")
