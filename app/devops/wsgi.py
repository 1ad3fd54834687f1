"""WSGI entry point, served by uwsgi: ``--module devops.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "devops.settings")

application = get_wsgi_application()
