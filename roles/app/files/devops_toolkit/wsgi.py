"""WSGI entry point of the release (``uwsgi_wsgi_application``).

Django is set up first, then the project's application is imported: ``DEVOPS_WSGI_APPLICATION``
(``module:attribute``) or else the project's ``WSGI_APPLICATION`` setting.
"""

import django

django.setup(set_prefix=False)

from devops_toolkit import health, target  # noqa: E402 - after django.setup()

project_application = target.load("DEVOPS_WSGI_APPLICATION", "WSGI_APPLICATION")


def application(environ, start_response):
    if health.is_health_request(environ.get("PATH_INFO", "")):
        headers = [(name.decode(), value.decode()) for name, value in health.HEADERS]
        start_response("200 OK", headers)
        return [health.BODY]
    return project_application(environ, start_response)


if not health.PATH:
    application = project_application  # noqa: F811 - nothing to answer in front of the project
