"""TLS end to end on one host: the checks make their own CA and a certificate it signs for localhost (community.crypto,
tls-ca.yml), deploy them with site.yml (nginx_tls_enabled), and check that plain HTTP redirects to HTTPS (the health
path excepted, for balancers), that the page and a websocket round trip work over https and wss with a chain valid for
the test CA only, and that sslyze finds the server compliant with Mozilla's "intermediate" profile (its findings are
printed). Afterwards site.yml runs again without TLS, so the host is as the other checks expect it.

Runs from the controller against the default scenario's trixie host (uvicorn behind nginx; once, not per host).
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import testinfra
from helpers import PROJECT, frames, grant_for, playbook, read_layout

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default", reason="runs once, in the default scenario"
)

HOST = "devops-molecule-trixie"
#: Where the host keeps the test CA for its clients (python's ssl and wsprobe read SSL_CERT_FILE).
HOST_CA = "/root/devops-test-ca.pem"
#: What a client does with a URL: the status, Location and Strict-Transport-Security of a GET, or the TLS error.
FETCH = """
import http.client, ssl, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
if url.scheme == "https":
    context = ssl.create_default_context(cafile=sys.argv[2] if len(sys.argv) > 2 else None)
    connection = http.client.HTTPSConnection("localhost", 443, context=context, timeout=10)
else:
    connection = http.client.HTTPConnection("localhost", 80, timeout=10)
try:
    connection.request("GET", url.path)
    response = connection.getresponse()
    print(response.status, response.getheader("Location"), response.getheader("Strict-Transport-Security"))
except ssl.SSLError as error:
    print("tls-error", type(error).__name__)
"""


@pytest.fixture(scope="module")
def tls_host():
    return testinfra.get_host(f"ansible://{HOST}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """The test CA and the server's certificate and key, made by tls-ca.yml in a fresh directory."""
    directory = tmp_path_factory.mktemp("tls")
    playbook_file = os.path.join(PROJECT, "molecule", "default", "tls-ca.yml")
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            playbook_file,
            "-e",
            f"tls_ca_dir={directory}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return directory


@pytest.fixture(scope="module")
def deployed(tls_host, certificates):
    """site.yml with TLS on the host; afterwards site.yml without it."""
    variables = certificates / "tls-vars.json"
    variables.write_text(
        json.dumps(
            {
                "nginx_tls_enabled": True,
                "nginx_tls_certificate": (certificates / "server.pem").read_text(),
                "nginx_tls_certificate_key": (certificates / "server.key").read_text(),
            }
        )
    )
    variables.chmod(0o600)
    tls_host.check_output("sh -c %s", f"cat > {HOST_CA} <<'EOF'\n{(certificates / 'ca.pem').read_text()}EOF")
    try:
        playbook("site.yml", HOST, "-e", f"@{variables}")
        yield tls_host
    finally:
        playbook("site.yml", HOST)


def fetch(host, url, cafile=None):
    return host.check_output("python3 -c %s %s %s", FETCH, url, cafile or "").split(" ", 2)


def test_plain_http_redirects_to_https_except_the_health_path(deployed):
    status, location, _ = fetch(deployed, "http://localhost/")
    assert (status, location) == ("301", "https://localhost/")
    assert fetch(deployed, "http://localhost/healthz")[0] == "200"


def test_https_serves_the_page_with_a_chain_valid_for_the_test_ca_only(deployed):
    status, _, hsts = fetch(deployed, "https://localhost/", HOST_CA)
    assert status == "200" and hsts.startswith("max-age=") and "preload" not in hsts, hsts
    # The system's CAs do not know the test CA: the same request fails verification.
    assert fetch(deployed, "https://localhost/") == ["tls-error", "SSLCertVerificationError"]


def test_a_websocket_round_trip_over_wss_and_none_over_plain_ws(deployed):
    layout = read_layout(deployed)
    service = "t-" + uuid.uuid4().hex[:10]
    grant = grant_for(deployed, layout, service, "--write")
    probe = f"SSL_CERT_FILE={HOST_CA} WSPROBE_GRANT={grant} /usr/local/bin/wsprobe roundtrip"
    assert deployed.run(f"{probe} wss://localhost/ws/deploy/{service}/").rc == 0
    plain = deployed.run(f"{probe} ws://localhost/ws/deploy/{service}/")
    assert plain.rc == 3 and "301" in frames(plain.stdout)[0]["reason"], plain.stdout


def test_sslyze_finds_the_mozilla_intermediate_profile(deployed, certificates):
    from sslyze import Scanner, ServerNetworkLocation, ServerScanRequest, ServerScanStatusEnum
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )
    from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
    from sslyze.scanner.models import ScanCommandsExtraArguments

    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", HOST],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname="localhost", port=443, ip_address=address),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(certificates / "ca.pem"))
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = scanner.get_results()
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    scan = result.scan_result
    versions = {
        name: [suite.cipher_suite.name for suite in getattr(scan, attribute).result.accepted_cipher_suites]
        for name, attribute in [
            ("SSL 2.0", "ssl_2_0_cipher_suites"),
            ("SSL 3.0", "ssl_3_0_cipher_suites"),
            ("TLS 1.0", "tls_1_0_cipher_suites"),
            ("TLS 1.1", "tls_1_1_cipher_suites"),
            ("TLS 1.2", "tls_1_2_cipher_suites"),
            ("TLS 1.3", "tls_1_3_cipher_suites"),
        ]
    }
    (deployment,) = scan.certificate_info.result.certificate_deployments
    trusted_by = [
        check.trust_store.name for check in deployment.path_validation_results if check.was_validation_successful
    ]
    curves = [curve.name for curve in scan.elliptic_curves.result.supported_curves or []]
    print(f"\nsslyze against {HOST} ({address}:443, SNI localhost):")
    for name, suites in versions.items():
        print(f"  {name}: {', '.join(suites) if suites else 'refused'}")
    print(f"  key exchange groups: {', '.join(curves)}")
    print(f"  certificate chain valid for: {', '.join(trusted_by) or 'no trust store'}")
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
        )
        issues = {}
    except ServerNotCompliantWithTlsConfiguration as error:
        issues = error.issues
    print(f"  Mozilla intermediate: {'compliant' if not issues else issues}")
    assert not any(versions[name] for name in ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1")), versions
    assert versions["TLS 1.2"] and versions["TLS 1.3"], versions
    assert trusted_by == ["Supplied CA file"], trusted_by
    assert not issues, issues
