"""Legacy profile only: the toolkit's patches are applied and fix what they fix.

Selected by the legacy scenario (molecule/legacy) through MOLECULE_SCENARIO_NAME.
"""

import os

import pytest
from helpers import http_get

pytestmark = pytest.mark.skipif(os.environ.get("MOLECULE_SCENARIO_NAME") != "legacy", reason="legacy scenario only")

DJANGO_PATCH = "django-1.11-basehandler-middleware-lists.patch"


@pytest.fixture(scope="module")
def site(layout):
    return layout["root"] + "/current/venv/lib/python3.9/site-packages"


@pytest.fixture(scope="module")
def django_patch(layout):
    return f"{layout['root']}/patches/{DJANGO_PATCH}"


@pytest.fixture(scope="module")
def daphne_0(layout):
    return layout["run_dir"] + "/daphne-0.sock"


def restart_daphne_0(host, socket):
    host.check_output("supervisorctl restart daphne:daphne-0")
    host.check_output(f"for i in $(seq 100); do [ -S {socket} ] && break; sleep 0.1; done")


def statuses(host, count, unix=None):
    return [http_get(host, "/healthz", unix=unix)[0] for _ in range(count)]


@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("django/core/handlers/base.py", "self._response_middleware = []"),
        ("channels_redis/core.py", "except BaseException"),
        ("channels_redis/core.py", "if not task.cancel():"),
        ("daphne/server.py", "from asyncio import CancelledError"),
        ("channels/utils.py", "from asyncio import CancelledError"),
    ],
)
def test_patches_are_applied(host, site, path, marker):
    assert marker in host.file(f"{site}/{path}").content_string


def test_patch_check_reports_already_applied(host, site, django_patch):
    """What the role's idempotence rests on: a reverse dry run succeeds on the patched tree."""
    assert host.run(f"patch -p1 -R --dry-run -d {site} < {django_patch}").rc == 0


def test_twenty_requests_through_nginx_all_succeed(host):
    assert statuses(host, 20) == [200] * 20


def test_twenty_requests_through_daphne_directly_all_succeed(host, daphne_0):
    assert statuses(host, 20, unix=daphne_0) == [200] * 20


def test_without_the_django_patch_daphne_fails_after_the_first_request(host, site, django_patch, daphne_0):
    """Regression guard: remove the patch, and the checks above must fail; then restore it."""
    host.check_output(f"patch -p1 -R -d {site} < {django_patch}")
    try:
        restart_daphne_0(host, daphne_0)
        unpatched = statuses(host, 6, unix=daphne_0)
    finally:
        host.check_output(f"patch -p1 --forward -d {site} < {django_patch}")
        restart_daphne_0(host, daphne_0)
    assert unpatched[0] == 200 and set(unpatched[1:]) == {500}, unpatched
    assert statuses(host, 6, unix=daphne_0) == [200] * 6
