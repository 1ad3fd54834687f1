"""HTTP middleware of the deploy app."""

import time

from django.utils.deprecation import MiddlewareMixin

from deploy import metrics


class RequestMetricsMiddleware(MiddlewareMixin):
    """Times each request into ``deploy_http_request_duration_seconds``, by view and status class.

    The view is the URL pattern's name (``push``, ``readyz``...), or ``unresolved`` for a request
    that matched none (a 404, or one refused before routing): the label never holds a client's
    path.
    """

    def process_request(self, request):
        request.metrics_started = time.perf_counter()

    def process_response(self, request, response):
        started = getattr(request, "metrics_started", None)
        if started is not None:
            match = getattr(request, "resolver_match", None)
            view = (match.url_name or match.view_name) if match is not None else "unresolved"
            status = f"{response.status_code // 100}xx"
            metrics.HTTP_DURATION.labels(view, status).observe(time.perf_counter() - started)
        return response
