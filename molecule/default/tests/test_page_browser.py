"""The bundled app's page in a real browser: headless Chromium (Debian's package) driven by Playwright, from the
controller, through the port the scenario publishes on 127.0.0.1 for each host's nginx (molecule.yml).

The page must load with its security headers, ask a visitor who is not signed in to sign in, and once signed in (a
user with the deploy.read_stream and write_stream permissions) obtain its grant and connect with no console error,
show a message pushed by the server and one sent from its own form, and come back by itself after the ASGI processes
restart, showing what it recovered from the history: the message pushed while they were down (the legacy profile
keeps no history: there it is lost).
A screenshot of each host's page is kept in artifacts/browser/.
"""

import os
import re
import secrets
import subprocess
import time

import pytest
from helpers import PROJECT
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(PROJECT, "artifacts", "browser")
# What Chromium logs itself while the ASGI processes are down (nginx answers the handshake with 502): expected
# during the restart, an error anywhere else.
OUTAGE_ERRORS = ("WebSocket connection to",)


def published_url(host):
    """http://127.0.0.1:PORT of the host's nginx, from the port Docker publishes for the container's port 80."""
    name = host.backend.get_hostname()
    result = subprocess.run(["docker", "port", name, "80/tcp"], capture_output=True, text=True, check=False)
    addresses = [line for line in result.stdout.splitlines() if line.startswith("127.0.0.1:")]
    assert addresses, f"{name} publishes no port 80 on 127.0.0.1 (molecule.yml: published_ports): {result.stderr}"
    return "http://" + addresses[0]


@pytest.fixture
def browser():
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox cannot run as root.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def browser_user(host, manage):
    """(name, password) of a user of the host's app who may read and send (deploy.read_stream, write_stream)."""
    password = secrets.token_urlsafe(16)
    script = (
        "import sys; from django.contrib.auth.models import Permission, User; "
        "user = User.objects.get_or_create(username='browser-check')[0]; user.set_password(sys.stdin.read()); "
        "user.save(); user.user_permissions.set(Permission.objects.filter(content_type__app_label='deploy'))"
    )
    host.check_output("printf %%s %s | %s shell -c %s", password, manage, script)
    return "browser-check", password


class Console:
    """Every console error and uncaught exception of a page, and whether the server was meant to be down."""

    def __init__(self, page):
        self.errors, self.outage = [], False
        page.on("console", self.on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def on_console(self, message):
        if message.type != "error":
            return
        if self.outage and message.text.startswith(OUTAGE_ERRORS):
            return
        self.errors.append(message.text)


def test_the_page_works_in_chromium_and_recovers_after_a_restart(host, layout, service, browser):
    url, manage, group = published_url(host), f"{layout['project']}-manage", layout["program"]
    history = layout["profile"] != "legacy"  # the legacy profile keeps no history (Redis streams need redis.asyncio)
    page = browser.new_page()
    console = Console(page)
    response = page.goto(f"{url}/deploy/{service}/")
    assert response.status == 200
    headers = response.headers
    assert "default-src 'self'" in headers.get("content-security-policy", ""), headers
    assert "permissions-policy" in headers, headers

    # Signed out: the grant view answers 401 (which Chromium logs) and the page asks the visitor to sign in.
    page.wait_for_selector("#state[data-state=closed]:has-text('sign in')", timeout=20000)
    username, password = browser_user(host, manage)
    page.click("#sign-in")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("#login button")
    page.wait_for_url(f"{url}/deploy/{service}/")
    console.errors.clear()
    page.wait_for_selector("#state[data-state=connected]", timeout=20000)
    assert page.locator("#account").inner_text().startswith(f"Signed in as {username}")
    host.check_output("%s push %s %s", manage, service, "pushed-by-the-server")
    page.wait_for_selector("#log li.push:has-text('pushed-by-the-server')", timeout=20000)
    page.fill("#message", "sent-from-the-page")
    page.click("#send-form button")
    page.wait_for_selector("#log li.client:has-text('sent-from-the-page')", timeout=20000)
    assert console.errors == [], "console errors before the restart"

    console.outage = True
    try:
        host.check_output("supervisorctl stop %s", f"{group}:*")
        page.wait_for_selector("#state[data-state=reconnecting]", timeout=20000)
        # Only the history has it: no websocket of this service is open anywhere.
        host.check_output("%s push %s %s", manage, service, "pushed-while-down")
    finally:
        host.check_output("supervisorctl start %s", f"{group}:*")
    started = time.monotonic()
    page.wait_for_selector("#state[data-state=connected]", timeout=60000)
    console.outage = False
    if history:
        page.wait_for_selector("#log li.push:has-text('pushed-while-down')", timeout=20000)
        recovered = page.locator("#log li.recovered").filter(has_text=re.compile("^recovered 1 message$"))
        recovered.wait_for(timeout=20000)
    print(f"{host.backend.get_hostname()}: reconnected {time.monotonic() - started:.1f} s after the restart")
    host.check_output("%s push %s %s", manage, service, "pushed-after-the-restart")
    page.wait_for_selector("#log li.push:has-text('pushed-after-the-restart')", timeout=20000)

    lines = page.locator("#log li").all_inner_texts()
    assert [line for line in lines if "pushed-by-the-server" in line or "sent-from" in line] == lines[:2], lines
    # Recovered once, not twice; without a history nothing kept it.
    assert sum("pushed-while-down" in line for line in lines) == (1 if history else 0), lines
    assert console.errors == [], "console errors after the restart"

    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"{host.backend.get_hostname()}.png")
    page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")
