"""Find the project's application: an environment variable, else the project's setting."""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


def load(variable, setting):
    """Import ``$variable`` (``module:attribute`` or ``module.attribute``), else the setting."""
    path = os.environ.get(variable, "").strip() or getattr(settings, setting, None)
    if not path:
        raise ImproperlyConfigured(
            f"{variable} is empty and the project's settings have no {setting}: "
            "set app_asgi_application / app_wsgi_application or the setting"
        )
    return import_string(path.replace(":", "."))
