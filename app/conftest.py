"""Fix the test environment before Django's settings are imported.

pytest-django imports the settings module named in pytest.ini before any conftest runs, so the
module is named here instead, once the environment below is in place. Unit tests run on the
in-memory channel layer; test_live.py starts real Redis, daphne and uwsgi processes.
"""

import os

import django

CONTRACT_PREFIXES = (
    "DJANGO_",
    "REDIS_",
    "CHANNEL",
    "DEPLOY_",
    "DATABASE_URL",
    "STATIC_ROOT",
    "PROMETHEUS_",
)

for name in list(os.environ):
    if name.startswith(CONTRACT_PREFIXES):
        del os.environ[name]

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "devops.settings",
        "DJANGO_SECRET_KEY": "test-secret-key-not-for-production",
        "DJANGO_HTTPS": "false",
        "CHANNEL_LAYER": "memory",
        # Clients with a grant that may send may send to any service (test_grants.py narrows it).
        "DEPLOY_CLIENT_WRITE_SERVICES": "*",
    }
)

django.setup()
